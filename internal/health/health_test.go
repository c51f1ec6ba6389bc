package health

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haplane/haplane/internal/testutil/testcerts"
)

func TestStep(t *testing.T) {
	// Each case feeds results in order and lists the status after each.
	tests := []struct {
		name       string
		fall, rise int
		results    string // '+' success, '-' failure
		want       []Status
		changes    int
	}{
		{"first success is up", 2, 2, "+", []Status{Up}, 1},
		{"first failure is down", 2, 2, "-", []Status{Down}, 1},
		{"up falls after fall failures", 3, 2, "+---", []Status{Up, Up, Up, Down}, 2},
		{"a success resets the fall streak", 2, 2, "+-+-+", []Status{Up, Up, Up, Up, Up}, 1},
		{"down rises after rise successes", 2, 3, "-+++", []Status{Down, Down, Down, Up}, 2},
		{"a failure resets the rise streak", 2, 2, "-+-+-", []Status{Down, Down, Down, Down, Down}, 1},
		{"fall 1 rise 1 follows every result", 1, 1, "+-+-", []Status{Up, Down, Up, Down}, 4},
		{"zero fall and rise act as 1", 0, 0, "+-", []Status{Up, Down}, 2},
		{"full cycle", 2, 2, "+--++", []Status{Up, Up, Down, Down, Up}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s State
			changes := 0
			for i, r := range tt.results {
				var changed bool
				s, changed = Step(s, r == '+', tt.fall, tt.rise)
				if changed {
					changes++
				}
				if s.Status != tt.want[i] {
					t.Fatalf("after result %d (%c): status %v, want %v", i, r, s.Status, tt.want[i])
				}
			}
			if changes != tt.changes {
				t.Errorf("changes = %d, want %d", changes, tt.changes)
			}
		})
	}
}

// TestCheckerTiming drives a checker on synctest's fake clock: a target
// that starts failing goes down after exactly fall probes (fall-1
// intervals after the first failure) and comes back after rise probes.
func TestCheckerTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var healthy atomic.Bool
		healthy.Store(true)
		type ev struct {
			to Status
			at time.Duration
		}
		var mu sync.Mutex
		var evs []ev
		start := time.Now()
		c, err := NewChecker(CheckerConfig{
			Interval: 100 * time.Millisecond, Fall: 3, Rise: 2,
			ProbeFunc: func(ctx context.Context, _ Target) Result {
				if healthy.Load() {
					return Result{OK: true, Latency: time.Millisecond}
				}
				return Result{Err: errors.New("boom")}
			},
			OnChange: func(ch Change) {
				mu.Lock()
				evs = append(evs, ev{ch.To, time.Since(start)})
				mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetTargets([]Target{{Addr: "a:1"}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		synctest.Wait()
		if c.Status("a:1") != Up || !c.AnyHealthy() {
			t.Fatalf("after first probe: %v, want up", c.Status("a:1"))
		}
		time.Sleep(450 * time.Millisecond) // probes at 0..400ms
		healthy.Store(false)               // probes at 500, 600, 700 fail
		time.Sleep(300*time.Millisecond + time.Millisecond)
		synctest.Wait()
		if c.Status("a:1") != Down || c.AnyHealthy() {
			t.Fatalf("at 751ms: %v, want down", c.Status("a:1"))
		}
		healthy.Store(true) // probes at 800, 900 pass
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		want := []ev{{Up, 0}, {Down, 700 * time.Millisecond}, {Up, 900 * time.Millisecond}}
		if len(evs) != len(want) {
			t.Fatalf("changes %v, want %v", evs, want)
		}
		for i := range want {
			if evs[i] != want[i] {
				t.Errorf("change %d = %+v, want %+v", i, evs[i], want[i])
			}
		}
	})
}

func TestCheckerSetTargets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var probes sync.Map // addr -> *atomic.Int64
		c, err := NewChecker(CheckerConfig{
			Interval: time.Second,
			ProbeFunc: func(ctx context.Context, tg Target) Result {
				v, _ := probes.LoadOrStore(tg.Addr, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
				return Result{OK: tg.Addr != "bad:1"}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go c.Run(ctx)
		c.SetTargets([]Target{{Addr: "a:1"}, {Addr: "bad:1"}})
		synctest.Wait()
		st := c.States()
		if len(st) != 2 || st[0].Status != Up || st[1].Status != Down {
			t.Fatalf("states %+v", st)
		}
		c.SetTargets([]Target{{Addr: "a:1"}, {Addr: "c:1"}})
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		count := func(a string) int64 {
			v, ok := probes.Load(a)
			if !ok {
				return 0
			}
			return v.(*atomic.Int64).Load()
		}
		if got := count("a:1"); got != 3 {
			t.Errorf("a probed %d times in 2.5s, want 3 (kept its ticker)", got)
		}
		if got := count("bad:1"); got != 1 {
			t.Errorf("removed target probed %d times, want 1", got)
		}
		if c.Status("bad:1") != Unknown || c.Status("c:1") != Up {
			t.Errorf("bad=%v c=%v", c.Status("bad:1"), c.Status("c:1"))
		}
	})
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  CheckerConfig
		want string
	}{
		{"bad kind", CheckerConfig{Probe: ProbeConfig{Kind: "udp"}}, "kind"},
		{"bad path", CheckerConfig{Probe: ProbeConfig{Path: "readyz"}}, "path"},
		{"bad status", CheckerConfig{Probe: ProbeConfig{ExpectStatus: 42}}, "status"},
		{"negative interval", CheckerConfig{Interval: -1}, "interval"},
		{"negative fall", CheckerConfig{Fall: -1}, "fall"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewChecker(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want mention of %q", err, tt.want)
			}
		})
	}
	c, _ := NewChecker(CheckerConfig{})
	if err := c.SetTargets([]Target{{Addr: "no-port"}}); err == nil {
		t.Error("target without port accepted")
	}
}

// backend is a real HTTPS server on loopback that counts connections.
type backend struct {
	srv    *httptest.Server
	status atomic.Int32
	live   atomic.Int32 // /livez
	conns  atomic.Int32
}

func newBackend(t *testing.T, pki testcerts.Pair) *backend {
	b := &backend{}
	b.status.Store(200)
	b.live.Store(200)
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/livez" {
			w.WriteHeader(int(b.live.Load()))
			return
		}
		if r.URL.Path != "/readyz" && r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(b.status.Load()))
	}))
	b.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.Server}}
	b.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string { return b.srv.Listener.Addr().String() }

func TestProbeReal(t *testing.T) {
	pki := testcerts.NewPair(t, "backend", "backend", "127.0.0.1")
	other := testcerts.NewPair(t, "backend", "backend", "127.0.0.1")
	b := newBackend(t, pki)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plain := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	closedLn, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := closedLn.Addr().String()
	closedLn.Close()

	tests := []struct {
		name   string
		addr   string
		cfg    ProbeConfig
		ok     bool
		errHas string
	}{
		{"https 200 verified", b.addr(), ProbeConfig{RootCAs: pki.Pool}, true, ""},
		{"https healthz", b.addr(), ProbeConfig{RootCAs: pki.Pool, Path: "/healthz"}, true, ""},
		{"https wrong path", b.addr(), ProbeConfig{RootCAs: pki.Pool, Path: "/nope"}, false, "status 404"},
		{"https server name", b.addr(), ProbeConfig{RootCAs: pki.Pool, ServerName: "backend"}, true, ""},
		{"https wrong name", b.addr(), ProbeConfig{RootCAs: pki.Pool, ServerName: "other"}, false, "certificate"},
		{"https wrong CA", b.addr(), ProbeConfig{RootCAs: other.Pool}, false, "certificate"},
		{"https no CA skips verify", b.addr(), ProbeConfig{}, true, ""},
		{"https expect 204", b.addr(), ProbeConfig{RootCAs: pki.Pool, ExpectStatus: 204}, false, "want 204"},
		{"https closed port", closed, ProbeConfig{}, false, "refused"},
		{"tls ok", b.addr(), ProbeConfig{Kind: KindTLS, RootCAs: pki.Pool}, true, ""},
		{"tls wrong CA", b.addr(), ProbeConfig{Kind: KindTLS, RootCAs: other.Pool}, false, "certificate"},
		{"tls to plain tcp", plain, ProbeConfig{Kind: KindTLS}, false, "tls handshake"},
		{"tcp ok", plain, ProbeConfig{Kind: KindTCP}, true, ""},
		{"tcp closed", closed, ProbeConfig{Kind: KindTCP}, false, "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewProber(tt.addr, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			r := p.Probe(t.Context())
			if r.OK != tt.ok {
				t.Fatalf("ok = %v (err %v), want %v", r.OK, r.Err, tt.ok)
			}
			if tt.errHas != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), tt.errHas)) {
				t.Errorf("err %v, want it to mention %q", r.Err, tt.errHas)
			}
			if r.Latency <= 0 {
				t.Errorf("latency %v not recorded", r.Latency)
			}
		})
	}

	t.Run("500 is a StatusError", func(t *testing.T) {
		b.status.Store(500)
		defer b.status.Store(200)
		p, _ := NewProber(b.addr(), ProbeConfig{RootCAs: pki.Pool})
		r := p.Probe(t.Context())
		var se *StatusError
		if !errors.As(r.Err, &se) || se.Got != 500 {
			t.Fatalf("err %v, want StatusError 500", r.Err)
		}
	})

	t.Run("unreachable only without a connection", func(t *testing.T) {
		silent, _ := net.Listen("tcp", "127.0.0.1:0") // connects, never answers
		defer silent.Close()
		b.status.Store(500)
		defer b.status.Store(200)
		for _, tc := range []struct {
			name, addr string
			want       bool
		}{
			{"refused", closed, true},
			{"answered 500", b.addr(), false},
			{"connected, silent", silent.Addr().String(), false},
		} {
			p, _ := NewProber(tc.addr, ProbeConfig{RootCAs: pki.Pool, Timeout: 150 * time.Millisecond})
			if r := p.Probe(t.Context()); r.OK || r.Unreachable != tc.want {
				t.Errorf("%s: ok %v unreachable %v (err %v), want failed, unreachable %v", tc.name, r.OK, r.Unreachable, r.Err, tc.want)
			}
			p.Close()
		}
	})

	t.Run("fresh connection per probe", func(t *testing.T) {
		p, _ := NewProber(b.addr(), ProbeConfig{RootCAs: pki.Pool})
		before := b.conns.Load()
		for range 5 {
			if r := p.Probe(t.Context()); !r.OK {
				t.Fatal(r.Err)
			}
		}
		if got := b.conns.Load() - before; got != 5 {
			t.Errorf("5 probes opened %d connections, want 5", got)
		}
	})

	t.Run("timeout bounds a silent target", func(t *testing.T) {
		// A listener that never accepts: the handshake never completes.
		sl, _ := net.Listen("tcp", "127.0.0.1:0")
		defer sl.Close()
		p, _ := NewProber(sl.Addr().String(), ProbeConfig{Timeout: 150 * time.Millisecond})
		start := time.Now()
		r := p.Probe(t.Context())
		if r.OK {
			t.Fatal("probe of a silent target passed")
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("probe took %v with a 150ms timeout", el)
		}
	})
}

// TestCheckerReal runs the checker against a real backend switching to 500
// and back, and checks the metrics it exports.
func TestCheckerReal(t *testing.T) {
	pki := testcerts.NewPair(t, "backend", "backend", "127.0.0.1")
	b := newBackend(t, pki)
	reg := prometheus.NewPedanticRegistry()
	_, changes, stop := runChecker(t, CheckerConfig{
		Probe:    ProbeConfig{RootCAs: pki.Pool},
		Interval: 50 * time.Millisecond, Fall: 2, Rise: 2,
		Registerer: reg,
	}, Target{Name: "b1", Addr: b.addr()})
	wait := func(want Status) Change { t.Helper(); return nextChange(t, changes, want) }
	wait(Up)
	b.status.Store(500)
	ch := wait(Down)
	var se *StatusError
	if !errors.As(ch.Result.Err, &se) {
		t.Errorf("down because %v, want a StatusError", ch.Result.Err)
	}
	if got := gauge(t, reg, "haplane_health_target_status"); got != float64(Down) {
		t.Errorf("target_status = %v, want %v", got, float64(Down))
	}
	b.status.Store(200)
	wait(Up)
	stop()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "haplane_health_probe_duration_seconds" {
			if n := len(mf.GetMetric()); n != 2 {
				t.Errorf("latency series = %d, want ok and fail", n)
			}
			for _, m := range mf.GetMetric() {
				if m.GetHistogram().GetSampleCount() == 0 {
					t.Errorf("empty latency histogram %v", m.GetLabel())
				}
			}
			return
		}
	}
	t.Error("no probe latency histogram")
}

// gauge returns the value of the single series of a gauge in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single series %s", name)
	return 0
}

// TestCheckerLiveness: a target failing /readyz but answering /livez is
// Down and live, reported once for each change; failing /livez too it is
// no longer live; a target passing /readyz is live without a /livez probe.
func TestCheckerLiveness(t *testing.T) {
	pki := testcerts.NewPair(t, "backend", "backend", "127.0.0.1")
	b := newBackend(t, pki)
	c, changes, _ := runChecker(t, CheckerConfig{
		Probe:    ProbeConfig{RootCAs: pki.Pool, LivenessPath: "/livez?exclude=etcd"},
		Interval: 50 * time.Millisecond, Fall: 2, Rise: 2,
	}, Target{Name: "b1", Addr: b.addr()})
	wait := func(ready, live Status) {
		t.Helper()
		select {
		case ch := <-changes:
			if ch.To != ready || ch.Live != live {
				t.Fatalf("change to ready %v live %v, want %v %v", ch.To, ch.Live, ready, live)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change to ready %v live %v", ready, live)
		}
	}
	wait(Up, Up)
	b.status.Store(500)
	wait(Down, Up)
	if r, l, n := c.Counts(); r != 0 || l != 1 || n != 1 || c.Live(b.addr()) != Up {
		t.Fatalf("counts ready %d live %d of %d, live %v; want 0 1 1 up", r, l, n, c.Live(b.addr()))
	}
	b.live.Store(500)
	wait(Down, Down)
	b.live.Store(200)
	wait(Down, Up)
	b.status.Store(200)
	wait(Up, Up)
}

// TestCheckerUnreachable: a readiness probe that got no connection is not
// followed by a liveness probe, which would fail the same way a timeout
// later; the target falls not live. One that answered is probed for
// liveness as before.
func TestCheckerUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name        string
		unreachable bool
		live        Status
		liveProbed  bool
	}{
		{"no connection", true, Down, false},
		{"answered, not ready", false, Up, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var liveProbes atomic.Int32
			_, changes, stop := runChecker(t, CheckerConfig{
				Interval: 10 * time.Millisecond, Fall: 1, Rise: 1,
				ProbeFunc: func(context.Context, Target) Result {
					return Result{Err: errors.New("not ready"), Unreachable: tc.unreachable}
				},
				LiveFunc: func(context.Context, Target) Result { liveProbes.Add(1); return Result{OK: true} },
			}, Target{Name: "b1", Addr: "127.0.0.1:1"})
			if ch := nextChange(t, changes, Down); ch.Live != tc.live {
				t.Errorf("live %v, want %v", ch.Live, tc.live)
			}
			stop()
			if got := liveProbes.Load() > 0; got != tc.liveProbed {
				t.Errorf("liveness probed: %v, want %v", got, tc.liveProbed)
			}
		})
	}
}

// runChecker runs a checker of cfg on target, its changes sent on the
// returned channel, until stop (which waits for Run to return) or the end
// of the test.
func runChecker(t *testing.T, cfg CheckerConfig, target Target) (c *Checker, changes <-chan Change, stop func()) {
	t.Helper()
	ch := make(chan Change, 16)
	cfg.OnChange = func(c Change) { ch <- c }
	c, err := NewChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTargets([]Target{target})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return c, ch, stop
}

// nextChange returns the checker's next change, which must be to want
// within 5s.
func nextChange(t *testing.T, changes <-chan Change, want Status) Change {
	t.Helper()
	select {
	case ch := <-changes:
		if ch.To != want {
			t.Fatalf("change to %v, want %v", ch.To, want)
		}
		return ch
	case <-time.After(5 * time.Second):
		t.Fatalf("no change to %v", want)
	}
	return Change{}
}
