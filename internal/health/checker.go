package health

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for CheckerConfig.
const (
	DefaultInterval = 200 * time.Millisecond
	DefaultFall     = 2
	DefaultRise     = 2
)

// Target is one thing to check. Addr (host:port) identifies it.
type Target struct {
	Name string // for logs and metrics; defaults to Addr
	Addr string
}

// Change reports a target whose status changed.
type Change struct {
	Target Target
	From   Status
	To     Status
	// Live is the target's liveness after the change: Up while it
	// passes the readiness probe or the liveness probe, Down when it
	// fails both (Unknown before the first probe). A Change is also
	// reported when only Live changed (From == To).
	Live Status
	// Result is the probe that caused the change (its Err says why a
	// target went down).
	Result Result
}

// CheckerConfig configures a Checker.
type CheckerConfig struct {
	// Probe says how each target is probed.
	Probe ProbeConfig
	// Interval between the starts of two probes of a target (default
	// 200ms; sub-second values are fine). A probe slower than Interval
	// delays the next one rather than overlapping it.
	Interval time.Duration
	// Fall consecutive failures mark an Up target Down (default 2); Rise
	// consecutive successes mark a Down target Up (default 2).
	Fall, Rise int
	// OnChange is called, from the checker's goroutines, on every status
	// change. It must not block for long: it delays that target's probes.
	OnChange func(Change)
	// ProbeFunc replaces the network probe; nil uses a Prober built from
	// Probe for each target. Tests use it to drive the checker on a fake
	// clock; it must honour ctx.
	ProbeFunc func(ctx context.Context, t Target) Result
	// LiveFunc replaces the liveness probe where ProbeFunc replaces the
	// readiness probe; nil with ProbeFunc set: no liveness probe.
	LiveFunc func(ctx context.Context, t Target) Result
	// Logger receives status changes (default: discard).
	Logger *slog.Logger
	// Registerer receives the checker's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

func (c *CheckerConfig) setDefaults() {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Fall == 0 {
		c.Fall = DefaultFall
	}
	if c.Rise == 0 {
		c.Rise = DefaultRise
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Probe.setDefaults()
}

func (c *CheckerConfig) validate() error {
	if c.Interval <= 0 {
		return fmt.Errorf("health: interval %v must be positive", c.Interval)
	}
	if c.Fall < 1 || c.Rise < 1 {
		return fmt.Errorf("health: fall (%d) and rise (%d) must be at least 1", c.Fall, c.Rise)
	}
	if c.ProbeFunc == nil {
		return c.Probe.validate()
	}
	return nil
}

// TargetState is a snapshot of one target's health.
type TargetState struct {
	Target Target `json:"target"`
	Status Status `json:"status"`
	// Live is Up while the target passes the readiness or the liveness
	// probe (see Change.Live).
	Live        Status        `json:"live"`
	LastError   string        `json:"lastError,omitempty"`
	LastLatency time.Duration `json:"lastLatency"`
}

// Checker probes a set of targets, each on its own ticker, and runs each
// target's results through Step. Targets can be replaced while it runs.
type Checker struct {
	cfg     CheckerConfig
	latency *prometheus.HistogramVec
	up      *prometheus.GaugeVec

	// mu protects cfg (replaced by Reconfigure), ctx, loops and states.
	mu     sync.Mutex
	ctx    context.Context // set while Run runs; nil before and after
	loops  map[string]*loop
	states map[string]*TargetState
	wg     sync.WaitGroup
}

// loop is one target's probing goroutine. Reconfigure replaces a loop
// with a new one that starts from the old one's hysteresis state; a
// result of the old one that arrives later is dropped (record checks the
// loop is still current).
type loop struct {
	target Target
	cfg    CheckerConfig // the configuration it probes with
	state  State         // its last hysteresis state, guarded by Checker.mu
	live   State         // the same for liveness
	cancel context.CancelFunc
}

// NewChecker validates cfg (after applying defaults) and returns a checker
// with no targets.
func NewChecker(cfg CheckerConfig) (*Checker, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Checker{
		cfg:    cfg,
		loops:  map[string]*loop{},
		states: map[string]*TargetState{},
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "haplane", Subsystem: "health", Name: "probe_duration_seconds",
			Help:    "Latency of health probes, by target and result.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"target", "result"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "haplane", Subsystem: "health", Name: "target_status",
			Help: "Health status of a target: 0 unknown, 1 up, 2 down.",
		}, []string{"target"}),
	}
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{c.latency, c.up} {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("health: register metrics: %w", err)
			}
		}
	}
	return c, nil
}

// SetTargets replaces the checked targets. Targets that stay keep their
// state and ticker; new ones start Unknown; removed ones stop.
func (c *Checker) SetTargets(ts []Target) error {
	c.mu.Lock()
	cfg := c.cfg
	c.mu.Unlock()
	want := map[string]Target{}
	for _, t := range ts {
		if t.Name == "" {
			t.Name = t.Addr
		}
		if cfg.ProbeFunc == nil {
			// Fail on a bad address now rather than in a loop.
			p, err := NewProber(t.Addr, cfg.Probe)
			if err != nil {
				return err
			}
			p.Close()
		}
		want[t.Addr] = t
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, l := range c.loops {
		if _, ok := want[addr]; !ok {
			if l.cancel != nil {
				l.cancel()
			}
			delete(c.loops, addr)
			delete(c.states, addr)
			c.up.DeleteLabelValues(l.target.Name)
		}
	}
	for addr, t := range want {
		if _, ok := c.loops[addr]; ok {
			continue
		}
		l := &loop{target: t, cfg: c.cfg}
		c.loops[addr] = l
		c.states[addr] = &TargetState{Target: t, Status: Unknown}
		c.up.WithLabelValues(t.Name).Set(float64(Unknown))
		if c.ctx != nil {
			c.start(l)
		}
	}
	return nil
}

// start runs l's probe loop; c.mu must be held and c.ctx set.
func (c *Checker) start(l *loop) {
	ctx, cancel := context.WithCancel(c.ctx)
	l.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run(ctx, l)
	}()
}

// Run probes the targets until ctx is done, then waits for every probe
// loop to stop. It returns nil on cancellation.
func (c *Checker) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.ctx != nil {
		c.mu.Unlock()
		return fmt.Errorf("health: checker already running")
	}
	c.ctx = ctx
	for _, l := range c.loops {
		c.start(l)
	}
	c.mu.Unlock()
	<-ctx.Done()
	c.mu.Lock()
	c.ctx = nil
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// run is one target's loop: probe at once, then every Interval.
func (c *Checker) run(ctx context.Context, l *loop) {
	t, cfg := l.target, l.cfg
	probe, probeLive := cfg.ProbeFunc, cfg.LiveFunc
	if probe == nil {
		p, err := NewProber(t.Addr, cfg.Probe)
		if err != nil { // validated in SetTargets; cannot happen
			cfg.Logger.Error("health: prober", "target", t.Name, "err", err)
			return
		}
		defer p.Close()
		probe = func(ctx context.Context, _ Target) Result { return p.Probe(ctx) }
		if p.Live() {
			probeLive = func(ctx context.Context, _ Target) Result { return p.ProbeLive(ctx) }
		}
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	c.mu.Lock()
	st, live := l.state, l.live
	c.mu.Unlock()
	for {
		r := probe(ctx, t)
		if ctx.Err() != nil {
			return // a probe cut short by shutdown says nothing about the target
		}
		label := "ok"
		if !r.OK {
			label = "fail"
		}
		c.latency.WithLabelValues(t.Name, label).Observe(r.Latency.Seconds())
		// Liveness is probed only when readiness fails: a ready target
		// is live, and the healthy case costs no second request. A
		// target the readiness probe could not connect to is not live
		// either: probing it again would double the time a blackholed
		// node (its link down, its power off) takes to fall, from
		// Fall x Timeout to Fall x 2 x Timeout, all the while sent new
		// sessions.
		liveOK := r.OK
		if !r.OK && !r.Unreachable && probeLive != nil {
			liveOK = probeLive(ctx, t).OK
			if ctx.Err() != nil {
				return
			}
		}
		prev := st.Status
		var changed, liveChanged bool
		st, changed = Step(st, r.OK, cfg.Fall, cfg.Rise)
		live, liveChanged = Step(live, liveOK, cfg.Fall, cfg.Rise)
		if !c.record(l, st, live, r) {
			return // removed by SetTargets, or replaced by Reconfigure, while probing
		}
		if liveChanged && !changed {
			cfg.Logger.Info("health: target liveness "+live.Status.String(), "target", t.Name, "ready", st.Status)
			if cfg.OnChange != nil {
				cfg.OnChange(Change{Target: t, From: prev, To: st.Status, Live: live.Status, Result: r})
			}
		}
		if changed {
			c.up.WithLabelValues(t.Name).Set(float64(st.Status))
			if st.Status == Down {
				cfg.Logger.Warn("health: target down", "target", t.Name, "err", r.Err)
			} else {
				cfg.Logger.Info("health: target "+st.Status.String(), "target", t.Name, "latency", r.Latency)
			}
			if cfg.OnChange != nil {
				cfg.OnChange(Change{Target: t, From: prev, To: st.Status, Live: live.Status, Result: r})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// record stores a result of loop l; it reports false when l is no longer
// the loop of its target.
func (c *Checker) record(l *loop, s, live State, r Result) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, ok := c.states[l.target.Addr]
	if !ok || c.loops[l.target.Addr] != l {
		return false
	}
	l.state, l.live = s, live
	ts.Status, ts.Live = s.Status, live.Status
	ts.LastLatency = r.Latency
	ts.LastError = ""
	if r.Err != nil {
		ts.LastError = r.Err.Error()
	}
	return true
}

// Status returns the status of the target at addr (Unknown if unchecked).
func (c *Checker) Status(addr string) Status { return c.status(addr, false) }

// status returns the readiness, or with live the liveness, of the target
// at addr (Unknown if unchecked).
func (c *Checker) status(addr string, live bool) Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, ok := c.states[addr]
	switch {
	case !ok:
		return Unknown
	case live:
		return ts.Live
	}
	return ts.Status
}

// AnyHealthy reports whether at least one target is Up: the signal the VIP
// side uses to lower its priority when this node can serve nobody.
func (c *Checker) AnyHealthy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ts := range c.states {
		if ts.Status == Up {
			return true
		}
	}
	return false
}

// Live returns the liveness of the target at addr (Unknown if unchecked).
func (c *Checker) Live(addr string) Status { return c.status(addr, true) }

// Counts returns how many targets are ready (Up) and how many live
// (ready, or passing the liveness probe), and how many there are.
func (c *Checker) Counts() (ready, live, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ts := range c.states {
		total++
		if ts.Status == Up {
			ready++
		}
		if ts.Live == Up || ts.Status == Up {
			live++
		}
	}
	return ready, live, total
}

// States returns a snapshot of every target, sorted by address.
func (c *Checker) States() []TargetState {
	c.mu.Lock()
	out := make([]TargetState, 0, len(c.states))
	for _, ts := range c.states {
		out = append(out, *ts)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b TargetState) int {
		switch {
		case a.Target.Addr < b.Target.Addr:
			return -1
		case a.Target.Addr > b.Target.Addr:
			return 1
		}
		return 0
	})
	return out
}

// Reconfigure replaces the probe settings, interval, fall and rise of a
// running checker (a reloaded cluster file). Every target keeps its status
// and the streak counted so far, judged from now on by the new fall and
// rise, and is probed at once with the new settings; nothing goes through
// Unknown, so the load balancer's pool does not move. OnChange, ProbeFunc,
// Logger and Registerer stay those of NewChecker. An invalid next changes
// nothing.
func (c *Checker) Reconfigure(next CheckerConfig) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	next.OnChange, next.ProbeFunc, next.Logger, next.Registerer = c.cfg.OnChange, c.cfg.ProbeFunc, c.cfg.Logger, c.cfg.Registerer
	next.setDefaults()
	if err := next.validate(); err != nil {
		return err
	}
	c.cfg = next
	for addr, old := range c.loops {
		if old.cancel != nil {
			old.cancel()
		}
		l := &loop{target: old.target, cfg: next, state: old.state, live: old.live}
		c.loops[addr] = l
		if c.ctx != nil {
			c.start(l)
		}
	}
	c.cfg.Logger.Info("health: reconfigured", "kind", next.Probe.Kind, "path", next.Probe.Path, "timeout", next.Probe.Timeout,
		"interval", next.Interval, "fall", next.Fall, "rise", next.Rise)
	return nil
}

// Config returns the configuration in use.
func (c *Checker) Config() CheckerConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}
