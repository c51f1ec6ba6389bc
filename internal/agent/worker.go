package agent

import (
	"context"
	"crypto/x509"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/haplane/haplane/internal/apiservers"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/health"
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

// setPool applies a discovered pool to the load balancer and its checks.
func (p *NodeLocalPart) setPool(pool []string) {
	p.lb.SetBackends(pool)
	targets := make([]health.Target, len(pool))
	for i, a := range pool {
		targets[i] = health.Target{Addr: a}
	}
	if err := p.checker.SetTargets(targets); err != nil {
		p.log.Error("apiservers: health checks of the new pool", "err", err)
	}
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
	if w != nil {
		if st := w.Status(); st.Source == "endpointslice" {
			p.setPool(st.Pool)
		}
	}
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
	var out []string
	for _, b := range p.lb.Backends() {
		out = append(out, b.Addr)
	}
	return out
}
