package lb

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/health"
)

// wireHealth runs a real checker over l's backends and feeds its verdicts
// to l, as `haplane lb run` does.
func wireHealth(t *testing.T, l *LB, cfg health.CheckerConfig, addrs []string) {
	t.Helper()
	cfg.OnChange = func(ch health.Change) {
		h := HealthUp
		if ch.To == health.Down {
			h = HealthDown
		}
		l.SetHealth(ch.Target.Addr, h)
	}
	c, err := health.NewChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ts []health.Target
	for _, a := range addrs {
		ts = append(ts, health.Target{Addr: a})
	}
	if err := c.SetTargets(ts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestReadyz500LeavesAndReturns: a backend answering 500 on /readyz is
// taken out of the pool after fall probes and put back after rise probes,
// and no client request reaches it in between.
func TestReadyz500LeavesAndReturns(t *testing.T) {
	const interval, fall, rise = 100 * time.Millisecond, 3, 2
	pki := newTestPKI(t)
	var addrs []string
	var bs []*tlsBackend
	for i := range 3 {
		b := startTLSBackend(t, pki, listenLoopback(t), fmt.Sprint("b", i))
		bs = append(bs, b)
		addrs = append(addrs, b.addr())
	}
	l := startLB(t, Config{Backends: addrs})
	wireHealth(t, l, health.CheckerConfig{
		Probe:    health.ProbeConfig{RootCAs: pki.pool, ServerName: "backend", Timeout: 500 * time.Millisecond},
		Interval: interval, Fall: fall, Rise: rise,
	}, addrs)
	healthOf := func(i int) Health { return l.Backends()[i].Health }
	waitFor(t, "all up", func() bool { return healthOf(0) == HealthUp && healthOf(1) == HealthUp && healthOf(2) == HealthUp })

	// The failure streak starts at the first probe after the switch, which
	// comes within one interval; the fall-th failure then lands fall-1
	// intervals later.
	bs[1].status.Store(500)
	start := time.Now()
	waitFor(t, "b1 down", func() bool { return healthOf(1) == HealthDown })
	down := time.Since(start)
	t.Logf("down after %v (fall %d × interval %v)", down, fall, interval)
	if lo, hi := (fall-1)*interval-20*time.Millisecond, fall*interval+200*time.Millisecond; down < lo || down > hi {
		t.Errorf("down after %v, want within [%v, %v]", down, lo, hi)
	}
	c := newClient(pki, l.addr())
	before := bs[1].hits.Load()
	for range 30 {
		if name, err := c.get(); err != nil || name == "b1" {
			t.Fatalf("request while b1 down: %q %v", name, err)
		}
	}
	if bs[1].hits.Load() != before {
		t.Error("requests reached the backend that is down")
	}

	bs[1].status.Store(200)
	start = time.Now()
	waitFor(t, "b1 up", func() bool { return healthOf(1) == HealthUp })
	up := time.Since(start)
	t.Logf("up after %v (rise %d × interval %v)", up, rise, interval)
	if lo, hi := (rise-1)*interval-20*time.Millisecond, rise*interval+200*time.Millisecond; up < lo || up > hi {
		t.Errorf("up after %v, want within [%v, %v]", up, lo, hi)
	}
	seen := map[string]bool{}
	for range 6 {
		name, err := c.get()
		if err != nil {
			t.Fatal(err)
		}
		seen[name] = true
	}
	if !seen["b1"] {
		t.Errorf("b1 back up but got no requests: %v", seen)
	}
}
