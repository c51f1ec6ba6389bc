package health

// Targets are the targets probing each of addrs (host:port).
func Targets(addrs []string) []Target {
	ts := make([]Target, 0, len(addrs))
	for _, a := range addrs {
		ts = append(ts, Target{Addr: a})
	}
	return ts
}
