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

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/health"
	"github.com/haplane/haplane/internal/lb"
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
		switch ch.To {
		case health.Up:
			l.SetHealth(ch.Target.Addr, lb.HealthUp)
		case health.Down:
			l.SetHealth(ch.Target.Addr, lb.HealthDown)
		}
	}
	chk, err := health.NewChecker(hcfg)
	if err != nil {
		return nil, err
	}
	var targets []health.Target
	for _, b := range lcfg.Backends {
		targets = append(targets, health.Target{Addr: b})
	}
	if err := chk.SetTargets(targets); err != nil {
		return nil, err
	}
	local := net.JoinHostPort(n.Address, strconv.Itoa(c.ControlPlaneEndpoint.APIServerPort))
	return &LBPart{lb: l, checker: chk, local: local, listen: listen, roots: roots}, nil
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

// AnyBackendHealthy reports whether the load balancer has a backend to send
// clients to: a node without one must not hold the VIP.
func (p *LBPart) AnyBackendHealthy(context.Context) error {
	if p.checker.AnyHealthy() {
		return nil
	}
	return errors.New("no healthy kube-apiserver behind the load balancer")
}

// LocalAPIServerHealthy reports this node's own kube-apiserver's health.
func (p *LBPart) LocalAPIServerHealthy(context.Context) error {
	if p.checker.Status(p.local) == health.Up {
		return nil
	}
	return fmt.Errorf("local kube-apiserver %s is not healthy", p.local)
}

// LBStatus is the load balancer's part of /status.
type LBStatus struct {
	Frontends   []string             `json:"frontends"`
	Policy      string               `json:"policy"`
	HealthCheck HealthCheckStatus    `json:"healthCheck"`
	Backends    []lb.BackendStatus   `json:"backends"`
	Checks      []health.TargetState `json:"checks"`
}

// HealthCheckStatus is the health check configuration in use (it changes
// with a reload).
type HealthCheckStatus struct {
	Kind     string `json:"kind"`
	Path     string `json:"path"`
	Interval string `json:"interval"`
	Timeout  string `json:"timeout"`
	Fall     int    `json:"fall"`
	Rise     int    `json:"rise"`
}

// Status implements Statuser.
func (p *LBPart) Status() any {
	hc := p.checker.Config()
	st := LBStatus{Policy: p.lb.Policy(), Backends: p.lb.Backends(), Checks: p.checker.States(),
		HealthCheck: HealthCheckStatus{Kind: string(hc.Probe.Kind), Path: hc.Probe.Path, Interval: hc.Interval.String(),
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
	sp     *speaker.Speaker
	ifname string
	// started is the node's address in the cluster file at start, running
	// the primary the speaker uses: over IPv6 Listen swaps in the
	// interface's link-local address (RFC 5798 §5.1.2.2), which a reload
	// must keep or it would look like a primary address change.
	started, running netip.Addr
	cancel           context.CancelFunc
	done             chan error
}

// Tracked-check weights. The first node's default priority is 250 and the
// next ones 249, 248...: losing every backend (-100) puts a node below any
// healthy one; a dead local apiserver (-10) moves the VIP to a node whose
// own apiserver works, when there is one.
const (
	WeightNoBackend      = -100
	WeightLocalAPIServer = -10
)

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
			{Name: "local-apiserver", Check: speaker.CheckFunc(lbp.LocalAPIServerHealthy), Weight: WeightLocalAPIServer, Fall: 1, Rise: 2, Interval: interval},
		}
	}
	started := scfg.VRRP.Primary
	conn, err := speaker.Listen(ifname, &scfg) // IPv6: the primary becomes the link-local address
	if err != nil {
		return nil, err
	}
	addrs, err := speaker.LinkAddrs(ifname, scfg.VRRP.Addrs)
	if err != nil {
		conn.Close()
		return nil, err
	}
	sp, err := speaker.New(scfg, conn, addrs)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &VIPPart{sp: sp, ifname: ifname, started: started, running: scfg.VRRP.Primary}, nil
}

// Name implements Part.
func (p *VIPPart) Name() string { return "vip" }

// Start runs the speaker.
func (p *VIPPart) Start(ctx context.Context, fail func(error)) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel, p.done = cancel, make(chan error, 1)
	go func() {
		err := p.sp.Run(runCtx)
		if err != nil && runCtx.Err() == nil {
			fail(err)
		}
		p.done <- err
	}()
	return nil
}

// Stop sends a priority-0 advert and releases the VIP (the speaker does so
// when its context ends).
func (p *VIPPart) Stop(ctx context.Context) error {
	p.cancel()
	select {
	case err := <-p.done:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status implements Statuser.
func (p *VIPPart) Status() any { return p.sp.Status() }
