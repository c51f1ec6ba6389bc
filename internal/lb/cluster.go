package lb

import (
	"net"
	"strconv"

	"github.com/haplane/haplane/internal/config"
)

// ConfigFromCluster maps a validated, defaulted cluster file to a Config:
// the frontend is the VIP and frontend port (listen, when not empty,
// overrides it, e.g. "0.0.0.0:8443" on a host that must accept on every
// address), the backends are every node's kube-apiserver. Frontends on the
// VIP use IP_FREEBIND so the listener is up before the VIP arrives.
func ConfigFromCluster(c *config.Cluster, listen string) Config {
	front := listen
	if front == "" {
		front = c.FrontendAddr().String()
	}
	var backends []string
	for _, a := range c.APIServerAddrs() {
		backends = append(backends, net.JoinHostPort(a.Addr().String(), strconv.Itoa(int(a.Port()))))
	}
	return Config{
		Frontends:        []string{front},
		Backends:         backends,
		Policy:           c.LoadBalancer.Algorithm,
		ConnectTimeout:   c.LoadBalancer.ConnectTimeout.Duration,
		HandshakeTimeout: c.LoadBalancer.HandshakeTimeout.Duration,
		Drain:            c.LoadBalancer.Drain.Duration,
		Loops:            c.LoadBalancer.Loops,
		FreeBind:         true,
	}
}
