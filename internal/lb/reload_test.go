package lb

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestReconfigureKeepsSessions switches a running load balancer from
// round robin to least connections and changes its timeouts: the sessions
// already open keep flowing, and the next connection follows the new
// policy.
func TestReconfigureKeepsSessions(t *testing.T) {
	a, b := listenLoopback(t), listenLoopback(t)
	echoServer(t, a)
	echoServer(t, b)
	backends := []string{a.Addr().String(), b.Addr().String()}
	l := startLB(t, Config{Backends: backends})
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		roundTrip(t, c)
		return c
	}
	// Round robin: a, b, a.
	open := []net.Conn{dial(), dial(), dial()}
	active := func() map[string]int64 {
		m := map[string]int64{}
		for _, s := range l.Backends() {
			m[s.Addr] = s.Active
		}
		return m
	}
	if got := active(); got[backends[0]]+got[backends[1]] != 3 || got[backends[0]] == got[backends[1]] {
		t.Fatalf("round robin spread 3 sessions as %v", got)
	}
	before := active()
	fewer := backends[0]
	if before[backends[1]] < before[fewer] {
		fewer = backends[1]
	}

	if err := l.Reconfigure(Config{Frontends: l.cfg.Frontends, Backends: backends, Policy: "leastconn",
		ConnectTimeout: 200 * time.Millisecond, IdleTimeout: time.Minute, Drain: time.Second}); err != nil {
		t.Fatalf("reconfigure: %v", err)
	}
	if l.Policy() != "leastconn" {
		t.Fatalf("policy %q after reconfigure", l.Policy())
	}
	for _, c := range open {
		roundTrip(t, c) // not dropped, still on its backend
	}
	dial() // least connections: to the backend with one session
	if got := active(); got[fewer] != before[fewer]+1 {
		t.Errorf("leastconn sent the 4th session elsewhere: before %v, after %v", before, got)
	}
	tun := l.tun.Load()
	if tun.dialer.Timeout != 200*time.Millisecond || tun.idle != time.Minute || tun.drain != time.Second {
		t.Errorf("tunables after reconfigure: %+v", tun)
	}
}

func TestReconfigureRefusals(t *testing.T) {
	a := listenLoopback(t)
	echoServer(t, a)
	l := startLB(t, Config{Backends: []string{a.Addr().String()}})

	// An unknown policy is refused and changes nothing.
	if err := l.Reconfigure(Config{Frontends: l.cfg.Frontends, Policy: "random", ConnectTimeout: time.Second}); err == nil {
		t.Fatal("unknown policy accepted")
	}
	if l.Policy() != "roundrobin" || l.tun.Load().dialer.Timeout != DefaultConnectTimeout || len(l.Backends()) != 1 {
		t.Fatalf("a refused reconfigure changed the load balancer: %s %+v", l.Policy(), l.Backends())
	}

	// A new frontend needs a restart; the rest is applied.
	err := l.Reconfigure(Config{Frontends: []string{"127.0.0.1:1"}, Backends: []string{a.Addr().String()}, Policy: "leastconn"})
	if !errors.Is(err, ErrRestartNeeded) {
		t.Fatalf("new frontend: %v, want ErrRestartNeeded", err)
	}
	if l.Policy() != "leastconn" {
		t.Errorf("policy %q: the applicable part was not applied", l.Policy())
	}
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c) // still serving on the old frontend
}
