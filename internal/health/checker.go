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
	Target      Target        `json:"target"`
	Status      Status        `json:"status"`
	LastError   string        `json:"lastError,omitempty"`
	LastLatency time.Duration `json:"lastLatency"`
}

// Checker probes a set of targets, each on its own ticker, and runs each
// target's results through Step. Targets can be replaced while it runs.
type Checker struct {
	cfg     CheckerConfig
	latency *prometheus.HistogramVec
	up      *prometheus.GaugeVec

	// mu protects ctx, loops and states.
	mu     sync.Mutex
	ctx    context.Context // set while Run runs; nil before and after
	loops  map[string]*loop
	states map[string]*TargetState
	wg     sync.WaitGroup
}

type loop struct {
	target Target
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
	want := map[string]Target{}
	for _, t := range ts {
		if t.Name == "" {
			t.Name = t.Addr
		}
		if c.cfg.ProbeFunc == nil {
			// Fail on a bad address now rather than in a loop.
			p, err := NewProber(t.Addr, c.cfg.Probe)
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
		l := &loop{target: t}
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
		c.run(ctx, l.target)
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
func (c *Checker) run(ctx context.Context, t Target) {
	probe := c.cfg.ProbeFunc
	if probe == nil {
		p, err := NewProber(t.Addr, c.cfg.Probe)
		if err != nil { // validated in SetTargets; cannot happen
			c.cfg.Logger.Error("health: prober", "target", t.Name, "err", err)
			return
		}
		defer p.Close()
		probe = func(ctx context.Context, _ Target) Result { return p.Probe(ctx) }
	}
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	var st State
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
		prev := st.Status
		var changed bool
		st, changed = Step(st, r.OK, c.cfg.Fall, c.cfg.Rise)
		if !c.record(t, st.Status, r) {
			return // removed by SetTargets while probing
		}
		if changed {
			c.up.WithLabelValues(t.Name).Set(float64(st.Status))
			if st.Status == Down {
				c.cfg.Logger.Warn("health: target down", "target", t.Name, "err", r.Err)
			} else {
				c.cfg.Logger.Info("health: target "+st.Status.String(), "target", t.Name, "latency", r.Latency)
			}
			if c.cfg.OnChange != nil {
				c.cfg.OnChange(Change{Target: t, From: prev, To: st.Status, Result: r})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// record stores a result; it reports false when t is no longer checked.
func (c *Checker) record(t Target, s Status, r Result) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, ok := c.states[t.Addr]
	if !ok {
		return false
	}
	ts.Status = s
	ts.LastLatency = r.Latency
	ts.LastError = ""
	if r.Err != nil {
		ts.LastError = r.Err.Error()
	}
	return true
}

// Status returns the status of the target at addr (Unknown if unchecked).
func (c *Checker) Status(addr string) Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts, ok := c.states[addr]; ok {
		return ts.Status
	}
	return Unknown
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
