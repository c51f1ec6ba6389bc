package lb

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haplane/haplane/internal/health"
)

// wireHealth runs a real checker over l's backends and feeds its verdicts
// to l, as `haplane lb run` does.
func wireHealth(t *testing.T, l *LB, cfg health.CheckerConfig, addrs []string) {
	t.Helper()
	cfg.OnChange = func(ch health.Change) {
		// As agent.LBHealth maps it (agent imports lb, not the reverse).
		h := HealthUp
		switch {
		case ch.To == health.Up:
		case ch.Live == health.Up:
			h = HealthLive
		default:
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
	bs, addrs := startTLSBackends(t, pki, 3)
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

func TestCandidates(t *testing.T) {
	const U, D, L, N = HealthUp, HealthDown, HealthLive, HealthUnknown
	for _, tc := range []struct {
		name    string
		health  []Health
		suspect []bool
		want    []int
		panic   bool
	}{
		{"all up", []Health{U, U, U}, []bool{false, false, false}, []int{0, 1, 2}, false},
		{"unknown counts as ready", []Health{N, D, L}, []bool{false, false, false}, []int{0}, false},
		{"one ready beats live ones", []Health{L, U, L}, []bool{false, false, false}, []int{1}, false},
		{"none ready: the live ones (panic)", []Health{L, D, L}, []bool{false, false, false}, []int{0, 2}, true},
		{"a suspect live one is skipped in panic", []Health{L, D, L}, []bool{true, false, false}, []int{2}, true},
		{"ready but suspect, live other: panic", []Health{U, L}, []bool{true, false}, []int{1}, true},
		{"none ready nor live: every one", []Health{D, D, D}, []bool{false, false, false}, []int{0, 1, 2}, false},
		{"every one suspect: every one", []Health{U, L}, []bool{true, true}, []int{0, 1}, false},
		{"empty pool", nil, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, p := Candidates(tc.health, tc.suspect)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || p != tc.panic {
				t.Fatalf("Candidates = %v panic %v, want %v panic %v", got, p, tc.want, tc.panic)
			}
		})
	}
}

// TestPanicRouting: with every backend failing /readyz but answering
// /livez, clients are still served, by the live ones (the pool is in
// panic, and the metric says so); a backend failing both gets nothing;
// once one is ready again it alone gets the clients.
func TestPanicRouting(t *testing.T) {
	pki := newTestPKI(t)
	bs, addrs := startTLSBackends(t, pki, 3)
	reg := prometheus.NewPedanticRegistry()
	l := startLB(t, Config{Backends: addrs, Registerer: reg})
	wireHealth(t, l, health.CheckerConfig{
		Probe:    health.ProbeConfig{RootCAs: pki.pool, ServerName: "backend", Timeout: 500 * time.Millisecond, LivenessPath: "/livez"},
		Interval: 50 * time.Millisecond, Fall: 2, Rise: 2,
	}, addrs)
	healthOf := func(i int) Health { return l.Backends()[i].Health }
	waitFor(t, "all up", func() bool { return healthOf(0) == HealthUp && healthOf(1) == HealthUp && healthOf(2) == HealthUp })
	panicGauge := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "haplane_lb_panic" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no haplane_lb_panic metric")
		return 0
	}
	if l.Panic() || panicGauge() != 0 {
		t.Fatal("panic with every backend ready")
	}
	c := newClient(pki, l.addr())
	spread := func(n int) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			name, err := c.get()
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			seen[name]++
		}
		return seen
	}

	for _, b := range bs {
		b.status.Store(500)
	}
	waitFor(t, "all live, none ready", func() bool {
		return healthOf(0) == HealthLive && healthOf(1) == HealthLive && healthOf(2) == HealthLive
	})
	if !l.Panic() || panicGauge() != 1 {
		t.Fatalf("no panic with every backend live and none ready: %v", l.Backends())
	}
	if seen := spread(30); len(seen) != 3 {
		t.Errorf("in panic, requests went to %v, want all three live backends", seen)
	}

	bs[2].live.Store(500)
	waitFor(t, "b2 down", func() bool { return healthOf(2) == HealthDown })
	if seen := spread(30); seen["b2"] != 0 || len(seen) != 2 {
		t.Errorf("in panic with b2 dead, requests went to %v, want b0 and b1 only", seen)
	}

	bs[0].status.Store(200)
	waitFor(t, "b0 up", func() bool { return healthOf(0) == HealthUp })
	if l.Panic() || panicGauge() != 0 {
		t.Error("still in panic with b0 ready")
	}
	if seen := spread(20); seen["b0"] != 20 {
		t.Errorf("with b0 ready, requests went to %v, want b0 only", seen)
	}
}
