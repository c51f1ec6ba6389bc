package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haplane/haplane/internal/bgp"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/health"
	"github.com/haplane/haplane/internal/lb"
	"github.com/haplane/haplane/internal/vrrp"
	"github.com/haplane/haplane/internal/vrrp/speaker"
)

// LBPart is the load balancer on the VIP with active health checks of every
// kube-apiserver; check results drive the pool, and the VIP part asks it
// whether this node can serve.
type LBPart struct {
	lb      *lb.LB
	checker *health.Checker
	local   string // this node's apiserver, host:port
	listen  string // the frontend override (empty: the VIP)
	roots   *x509.CertPool

	// exMu protects configured and excluded: the pool is the cluster
	// file's backends less those of nodes in maintenance.
	exMu       sync.Mutex
	configured []string
	excluded   map[string]bool

	cancel context.CancelFunc
	done   chan struct{}
}

// NewLBPart builds the load balancer of node from the cluster file. roots
// verifies the apiservers' certificates (nil: not verified).
func NewLBPart(c *config.Cluster, node string, listen string, roots *x509.CertPool, reg prometheus.Registerer, log *slog.Logger) (*LBPart, error) {
	n, ok := c.NodeByName(node)
	if !ok {
		return nil, fmt.Errorf("agent: node %q is not in the cluster file", node)
	}
	return newLBPart(c, listen, net.JoinHostPort(n.Address, strconv.Itoa(c.ControlPlaneEndpoint.APIServerPort)), roots, reg, log)
}

// newLBPart builds a load balancer on listen (empty: the VIP) whose node's
// own apiserver is local (empty on a worker).
func newLBPart(c *config.Cluster, listen, local string, roots *x509.CertPool, reg prometheus.Registerer, log *slog.Logger) (*LBPart, error) {
	lcfg := lb.ConfigFromCluster(c, listen)
	lcfg.Logger = log.With("part", "lb")
	lcfg.Registerer = reg
	l, err := lb.New(lcfg)
	if err != nil {
		return nil, err
	}
	hcfg := health.ConfigFromCluster(c, roots)
	hcfg.Logger = log.With("part", "health")
	hcfg.Registerer = reg
	hcfg.OnChange = func(ch health.Change) {
		if h, ok := LBHealth(ch.To, ch.Live); ok {
			l.SetHealth(ch.Target.Addr, h)
		}
	}
	chk, err := health.NewChecker(hcfg)
	if err != nil {
		return nil, err
	}
	targets := health.Targets(lcfg.Backends)
	if err := chk.SetTargets(targets); err != nil {
		return nil, err
	}
	return &LBPart{lb: l, checker: chk, local: local, listen: listen, roots: roots, configured: lcfg.Backends}, nil
}

// Name implements Part.
func (p *LBPart) Name() string { return "lb" }

// Start listens on the frontends and starts serving and checking.
func (p *LBPart) Start(ctx context.Context, fail func(error)) error {
	if err := p.lb.Listen(ctx); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel, p.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := p.checker.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			fail(fmt.Errorf("health checks: %w", err))
		}
	}()
	go func() {
		defer wg.Done()
		if err := p.lb.Serve(runCtx); err != nil && runCtx.Err() == nil {
			fail(err)
		}
	}()
	go func() { wg.Wait(); close(p.done) }()
	return nil
}

// Stop stops accepting and drains sessions within ctx.
func (p *LBPart) Stop(ctx context.Context) error {
	err := p.lb.Shutdown(ctx)
	p.cancel()
	select {
	case <-p.done:
	case <-ctx.Done():
	}
	return err
}

// LBHealth maps a backend's readiness and liveness to the load balancer's
// view: ready is up; not ready but live is live (used in panic only); both
// failed is down. ok is false while readiness is still unknown.
func LBHealth(ready, live health.Status) (h lb.Health, ok bool) {
	switch {
	case ready == health.Up:
		return lb.HealthUp, true
	case ready == health.Down && live == health.Up:
		return lb.HealthLive, true
	case ready == health.Down:
		return lb.HealthDown, true
	}
	return lb.HealthUnknown, false
}

// ServeVerdict is the pure judgement of the VIP's two tracked checks from
// what this node's checker sees: ready and live count the backends that
// pass the readiness check and those that pass readiness or liveness;
// localReady is this node's own apiserver's readiness.
//
// The VIP moves for a reason another node does not share, never for one
// every node shares: they all probe the same apiservers. canServe fails
// only when no backend is even live (this node can serve nobody; in panic
// it still serves the live ones). localOK fails only when this node's own
// apiserver is not ready while another one is: with every apiserver
// unready together (etcd's quorum lost, or all of them stalled) nobody
// serves better and the VIP stays.
func ServeVerdict(ready, live int, localReady bool) (canServe, localOK bool) {
	canServe = live > 0
	localOK = localReady || ready == 0
	return canServe, localOK
}

// AnyBackendHealthy reports whether the load balancer has a backend to send
// clients to: a node without one must not hold the VIP. In panic (no
// backend ready, some live) it still has.
func (p *LBPart) AnyBackendHealthy(context.Context) error {
	ready, live, _ := p.checker.Counts()
	if ok, _ := ServeVerdict(ready, live, p.checker.Status(p.local) == health.Up); ok {
		return nil
	}
	return errors.New("no live kube-apiserver behind the load balancer")
}

// BGPHealth is the load balancer's view for the BGP announcement: ready
// while some apiserver is ready, panic while none is but some are live,
// down when none is live.
func (p *LBPart) BGPHealth() bgp.Health {
	ready, live, _ := p.checker.Counts()
	switch {
	case ready > 0:
		return bgp.Ready
	case live > 0:
		return bgp.Panic
	}
	return bgp.Down
}

// LocalAPIServerHealthy reports this node's own kube-apiserver's health,
// relative to the others': it fails only while another one is ready.
//
// A local apiserver left out of the pool for maintenance passes: the node
// is without it on purpose, and a node that kept the VIP for the work
// (keep-vip) must not lose it to this check.
func (p *LBPart) LocalAPIServerHealthy(context.Context) error {
	if p.isExcluded(p.local) {
		return nil
	}
	ready, live, _ := p.checker.Counts()
	if _, ok := ServeVerdict(ready, live, p.checker.Status(p.local) == health.Up); ok {
		return nil
	}
	return fmt.Errorf("local kube-apiserver %s is not ready while another one is", p.local)
}

// LBStatus is the load balancer's part of /status.
type LBStatus struct {
	Frontends []string `json:"frontends"`
	Policy    string   `json:"policy"`
	// Panic: no backend is ready and new sessions go to the live ones.
	Panic       bool                 `json:"panic"`
	HealthCheck HealthCheckStatus    `json:"healthCheck"`
	Backends    []lb.BackendStatus   `json:"backends"`
	Checks      []health.TargetState `json:"checks"`
	// Engine is the event loops serving the sessions.
	Engine lb.EngineStatus `json:"engine"`
}

// HealthCheckStatus is the health check configuration in use (it changes
// with a reload).
type HealthCheckStatus struct {
	Kind string `json:"kind"`
	Path string `json:"path"`
	// LivenessPath is probed when Path fails ("" when off).
	LivenessPath string `json:"livenessPath,omitempty"`
	Interval     string `json:"interval"`
	Timeout      string `json:"timeout"`
	Fall         int    `json:"fall"`
	Rise         int    `json:"rise"`
}

// Status implements Statuser.
func (p *LBPart) Status() any {
	hc := p.checker.Config()
	st := LBStatus{Policy: p.lb.Policy(), Panic: p.lb.Panic(), Backends: p.lb.Backends(), Checks: p.checker.States(), Engine: p.lb.Engine(),
		HealthCheck: HealthCheckStatus{Kind: string(hc.Probe.Kind), Path: hc.Probe.Path, LivenessPath: hc.Probe.LivenessPath, Interval: hc.Interval.String(),
			Timeout: hc.Probe.Timeout.String(), Fall: hc.Fall, Rise: hc.Rise}}
	for _, a := range p.lb.Addrs() {
		st.Frontends = append(st.Frontends, a.String())
	}
	return st
}

// Ready implements Readier: the frontends are listening.
func (p *LBPart) Ready() bool { return len(p.lb.Addrs()) > 0 }

// VIPPart is the VRRP speaker holding the VIP. It never depends on etcd.
type VIPPart struct {
	// mu protects sp, addrs, cfg, paused, cancel and done: maintenance
	// stops and restarts the speaker while the agent runs.
	mu     sync.Mutex
	sp     *speaker.Speaker
	addrs  speaker.Addrs
	cfg    speaker.Config // the configuration a rebuilt speaker starts with
	build  func(speaker.Config) (*speaker.Speaker, speaker.Addrs, error)
	paused bool // in maintenance: the speaker does not run
	ran    bool // sp ran (its socket is closed)
	log    *slog.Logger
	ifname string
	// started is the node's address in the cluster file at start, running
	// the primary the speaker uses: over IPv6 Listen swaps in the
	// interface's link-local address (RFC 5798 §5.1.2.2), which a reload
	// must keep or it would look like a primary address change.
	started, running netip.Addr
	cancel           context.CancelFunc
	done             chan error
	fail             func(error)
}

// Tracked-check weights. The first node's default priority is 250 and the
// next ones 249, 248...: losing every backend (-100) puts a node below any
// healthy one; a dead local apiserver (-10) moves the VIP to a node whose
// own apiserver works, when there is one.
const (
	WeightNoBackend      = -100
	WeightLocalAPIServer = -10
)

// localAPIServerFall is the local-apiserver track's fall, in 100ms reads
// (10s). After a cluster-wide fault the apiservers turn ready again at
// different times: a CI run on 2 busy cores saw stub apiservers flap
// between ready and not for 5.4s after every one was SIGCONTed, and the
// VIP moved for it with a 3s fall. The load balancer routes around an
// unready local apiserver at once, so the VIP's move is a preference that
// can wait.
const localAPIServerFall = 100

// NewVIPPart builds the speaker of node. The checks are the load balancer's
// signals (nil when this agent runs no load balancer).
func NewVIPPart(c *config.Cluster, node string, lbp *LBPart, reg prometheus.Registerer, log *slog.Logger) (*VIPPart, error) {
	scfg, ifname, err := speaker.FromCluster(c, node)
	if err != nil {
		return nil, err
	}
	scfg.Logger = log.With("part", "vip")
	if reg != nil {
		m, err := speaker.NewPrometheus(reg)
		if err != nil {
			return nil, err
		}
		scfg.Metrics = m
	}
	if lbp != nil {
		// Read every 100ms with fall 1: the health checker already applied
		// its own fall/rise to each backend, so a second delay would only
		// slow the hand-over (detection ≈ checker fall × interval + 100ms,
		// then the backups' Master_Down_Interval).
		interval := 100 * time.Millisecond
		scfg.Tracks = []speaker.Track{
			{Name: "lb-backend", Check: speaker.CheckFunc(lbp.AnyBackendHealthy), Weight: WeightNoBackend, Fall: 1, Rise: 2, Interval: interval},
			// Slow to fall (10s): when the apiservers come back from a
			// cluster-wide fault they turn ready up to seconds apart,
			// and the holder's own one may be last; the VIP must not move
			// for that. The load balancer routes around a dead local
			// apiserver at once, so clients do not wait for this.
			{Name: "local-apiserver", Check: speaker.CheckFunc(lbp.LocalAPIServerHealthy), Weight: WeightLocalAPIServer, Fall: localAPIServerFall, Rise: 2, Interval: interval},
		}
	}
	started := scfg.VRRP.Primary
	p := &VIPPart{ifname: ifname, started: started, log: scfg.Logger}
	// build makes a speaker on a fresh socket: at start, and again when
	// maintenance ends (a speaker that ran is done with its socket).
	p.build = func(cfg speaker.Config) (*speaker.Speaker, speaker.Addrs, error) {
		conn, err := speaker.Listen(ifname, &cfg) // IPv6: the primary becomes the link-local address
		if err != nil {
			return nil, nil, err
		}
		addrs, err := speaker.LinkAddrs(ifname, cfg.VRRP.Addrs)
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		sp, err := speaker.New(cfg, conn, addrs)
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		p.running = cfg.VRRP.Primary
		return sp, addrs, nil
	}
	p.cfg = scfg
	sp, addrs, err := p.build(scfg)
	if err != nil {
		return nil, err
	}
	p.sp, p.addrs = sp, addrs
	return p, nil
}

// Name implements Part.
func (p *VIPPart) Name() string { return "vip" }

// Start runs the speaker, unless the node is in maintenance: then it only
// makes sure the VIP is not on the link (a crashed run may have left it).
func (p *VIPPart) Start(_ context.Context, fail func(error)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = fail
	if p.paused {
		if err := p.addrs.Release(); err != nil {
			return fmt.Errorf("vip: release the VIP of a node in maintenance: %w", err)
		}
		p.log.Info("node in maintenance: the VRRP speaker stays stopped")
		return nil
	}
	p.runLocked()
	return nil
}

// runLocked runs p.sp until stopLocked; p.mu must be held.
func (p *VIPPart) runLocked() {
	runCtx, cancel := context.WithCancel(context.Background())
	sp, done, fail := p.sp, make(chan error, 1), p.fail
	p.cancel, p.done, p.ran = cancel, done, true
	go func() {
		err := sp.Run(runCtx)
		if err != nil && runCtx.Err() == nil && fail != nil {
			fail(err)
		}
		done <- err
	}()
}

// stopLocked stops a running speaker; p.mu must be held.
func (p *VIPPart) stopLocked(ctx context.Context) error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	done := p.done
	p.cancel, p.done = nil, nil
	select {
	case err := <-done:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop sends a priority-0 advert and releases the VIP (the speaker does so
// when its context ends).
func (p *VIPPart) Stop(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopLocked(ctx)
}

// SetPausedAtStart makes Start leave the speaker stopped: the node was in
// maintenance when the agent stopped, and must not take the VIP back.
func (p *VIPPart) SetPausedAtStart() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Pause leaves the virtual router for maintenance: a master sends its
// priority-0 advert (the backups take over after Skew_Time, RFC 5798
// §6.4.2) and releases the VIP; a backup only stops, so it will not take
// the VIP over while the node is down for maintenance. held says whether
// this node was master.
func (p *VIPPart) Pause(ctx context.Context) (held bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		return false, nil
	}
	held = p.sp.Status().State == vrrp.Master
	p.paused = true
	return held, p.stopLocked(ctx)
}

// Resume rejoins the virtual router with a new speaker on a new socket,
// with the configuration of the last reload.
func (p *VIPPart) Resume() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		return nil
	}
	if p.ran {
		sp, addrs, err := p.build(p.cfg)
		if err != nil {
			return fmt.Errorf("vip: rejoin the virtual router: %w", err)
		}
		p.sp, p.addrs = sp, addrs
	}
	p.paused = false
	p.runLocked()
	return nil
}

// Paused reports whether the speaker is stopped for maintenance.
func (p *VIPPart) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// Status implements Statuser.
func (p *VIPPart) Status() any {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.sp.Status()
	if p.paused {
		return struct {
			speaker.Status
			Maintenance bool `json:"maintenance"`
		}{st, true}
	}
	return st
}

// Master reports whether this node holds the VIP.
func (p *VIPPart) Master() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.paused && p.sp.Status().State == vrrp.Master
}
