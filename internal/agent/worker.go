package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/haplane/haplane/internal/apiservers"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/health"
	"github.com/haplane/haplane/internal/lb"
)

// NodeLocalPart is a worker's own load balancer to every kube-apiserver
// (loadBalancer.nodeLocal): the control plane's load balancer, health
// checks and ClientHello replay, on a loopback frontend, so the node's
// kubelet and kube-proxy never wait for the VIP to move. Its pool starts
// as the cluster file's nodes and then follows the kubernetes Service's
// EndpointSlices.
type NodeLocalPart struct {
	*LBPart
	discovery string
	// client builds the discovery watch's client; retried until it works
	// (a worker's kubelet.conf appears only once it joined).
	client func() (kubernetes.Interface, error)
	log    *slog.Logger

	mu      sync.Mutex
	watcher *apiservers.Watcher
	wdone   chan struct{}
	wcancel context.CancelFunc
}

// NewNodeLocalPart builds a worker's load balancer from the cluster file.
// client is used only with endpointslice discovery.
func NewNodeLocalPart(c *config.Cluster, roots *x509.CertPool, client func() (kubernetes.Interface, error), reg prometheus.Registerer, log *slog.Logger) (*NodeLocalPart, error) {
	nl := c.LoadBalancer.NodeLocal
	lbp, err := newLBPart(c, nl.Listen, "", roots, reg, log)
	if err != nil {
		return nil, err
	}
	return &NodeLocalPart{LBPart: lbp, discovery: nl.Discovery, client: client, log: log.With("part", "apiservers")}, nil
}

// Start serves and, with endpointslice discovery, follows the apiservers.
func (p *NodeLocalPart) Start(ctx context.Context, fail func(error)) error {
	if err := p.LBPart.Start(ctx, fail); err != nil {
		return err
	}
	if p.discovery != config.DiscoveryEndpointSlice || p.client == nil {
		return nil
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.mu.Lock()
	p.wcancel, p.wdone = cancel, make(chan struct{})
	p.watcher = &apiservers.Watcher{Bootstrap: p.pool(), OnChange: p.setPool, Log: p.log}
	w := p.watcher
	p.mu.Unlock()
	go func() {
		defer close(p.wdone)
		var cs kubernetes.Interface
		for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
			var err error
			if cs, err = p.client(); err == nil {
				break
			}
			p.log.Warn("apiservers: no client for discovery yet; the pool stays the cluster file's", "err", err, "retry", delay)
			select {
			case <-wctx.Done():
				return
			case <-time.After(delay):
			}
		}
		w.Client = cs
		_ = w.Run(wctx)
	}()
	return nil
}

// setPool applies a discovered pool to the load balancer and its checks;
// the apiservers of nodes in maintenance stay out of the balancing (their
// checks go on, so one that comes back takes its verdict at once).
func (p *NodeLocalPart) setPool(pool []string) {
	targets := make([]health.Target, len(pool))
	for i, a := range pool {
		targets[i] = health.Target{Addr: a}
	}
	if err := p.checker.SetTargets(targets); err != nil {
		p.log.Error("apiservers: health checks of the new pool", "err", err)
	}
	p.exMu.Lock()
	p.configured = slices.Clone(pool)
	p.applyPoolLocked()
	p.exMu.Unlock()
}

// FollowMaintenance leaves out of the pool the apiservers (apis: node to
// host:port) of the control-plane nodes that w reports in maintenance.
// The control plane's load balancers learn it the same way; a worker is
// not among the peers a drain waits for, so it reads them every second
// like they do, and a drain lasts longer than that read.
func (p *NodeLocalPart) FollowMaintenance(w *PeerWatcher, apis map[string]string) {
	w.setOnChange(func() {
		var addrs []string
		for n, d := range w.Docs() {
			if a, ok := apis[n]; ok && d.Maintenance {
				addrs = append(addrs, a)
			}
		}
		p.log.Info("apiservers: nodes in maintenance left out of the pool", "apiservers", addrs)
		p.SetExcluded(addrs)
	})
}

// Stop stops following the apiservers, then drains the load balancer.
func (p *NodeLocalPart) Stop(ctx context.Context) error {
	p.mu.Lock()
	cancel, done := p.wcancel, p.wdone
	p.mu.Unlock()
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	return p.LBPart.Stop(ctx)
}

// Reload applies a reloaded cluster file's load-balancer settings; the
// discovered pool, when there is one, stays.
func (p *NodeLocalPart) Reload(c *config.Cluster) error {
	err := ReloadLB(p.lb, p.checker, c, p.listen, p.roots)
	p.mu.Lock()
	w := p.watcher
	p.mu.Unlock()
	if err != nil && !errors.Is(err, ErrRestartNeeded) {
		return err
	}
	// The discovered pool, or the file's; nodes in maintenance stay out.
	if w != nil {
		if st := w.Status(); st.Source == "endpointslice" {
			p.setPool(st.Pool)
			return err
		}
	}
	p.setPool(lb.ConfigFromCluster(c, p.listen).Backends)
	return err
}

// NodeLocalStatus is the worker load balancer's part of /status.
type NodeLocalStatus struct {
	LBStatus
	Discovery apiservers.Status `json:"discovery"`
}

// Status implements Statuser.
func (p *NodeLocalPart) Status() any {
	st := NodeLocalStatus{LBStatus: p.LBPart.Status().(LBStatus), Discovery: apiservers.Status{Source: "cluster file", Pool: p.pool()}}
	p.mu.Lock()
	w := p.watcher
	p.mu.Unlock()
	if w != nil {
		st.Discovery = w.Status()
	}
	return st
}

// pool lists the load balancer's backends.
func (p *NodeLocalPart) pool() []string {
	p.exMu.Lock()
	defer p.exMu.Unlock()
	return slices.Clone(p.configured)
}
