package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/haplane/haplane/internal/bgp"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/vip"
)

// BGPPart announces the VIP over BGP in vip.mode bgp, in place of the VRRP
// speaker: every healthy node announces, so the routers spread clients
// over all of them. The VIP is a host address on lo on every node
// (LoopbackVIPPart).
//
// Health is the load balancer's view, read every bgpHealthInterval: ready
// while some apiserver is ready, panic while none is but some are live
// (bgp.Panic: it keeps a held route and never starts one), down when none
// is live; down at the first down read and ready or panic after
// bgpHealthRise good ones. The VRRP local-apiserver track has no
// counterpart: with every node serving, one whose own apiserver is down
// still forwards to the others.
type BGPPart struct {
	ann    *bgp.Announcer
	health func() bgp.Health
	log    *slog.Logger

	mu     sync.Mutex // protects cancel and done
	cancel context.CancelFunc
	done   chan struct{}
}

const (
	bgpHealthInterval = 100 * time.Millisecond
	bgpHealthRise     = 2
)

// BGPConfigFromCluster is node's announcer configuration.
func BGPConfigFromCluster(c *config.Cluster, node string) (bgp.Config, error) {
	n, ok := c.NodeByName(node)
	if !ok {
		return bgp.Config{}, fmt.Errorf("agent: bgp: %q is not a node of the cluster", node)
	}
	b := c.VIP.BGP
	if b == nil {
		return bgp.Config{}, fmt.Errorf("agent: bgp: vip.bgp is not set")
	}
	rid, err := netip.ParseAddr(c.RouterIDFor(n))
	if err != nil {
		return bgp.Config{}, fmt.Errorf("agent: bgp: router ID of %s: %w", node, err)
	}
	cfg := bgp.Config{
		VIP: c.VIPAddr(), LocalASN: b.LocalASN, RouterID: rid,
		HoldTime: b.HoldTime.Duration, Keepalive: b.KeepaliveInterval.Duration,
	}
	for _, p := range b.Peers {
		a, err := netip.ParseAddr(p.Address)
		if err != nil {
			return bgp.Config{}, fmt.Errorf("agent: bgp: peer %q: %w", p.Address, err)
		}
		cfg.Peers = append(cfg.Peers, bgp.Peer{Address: a, ASN: p.ASN, Password: p.Password, Port: p.Port, BFD: p.BFD})
	}
	for _, s := range b.Communities {
		cm, err := config.ParseCommunity(s)
		if err != nil {
			return bgp.Config{}, fmt.Errorf("agent: bgp: %w", err)
		}
		cfg.Communities = append(cfg.Communities, cm)
	}
	return cfg, nil
}

// NewBGPPart builds node's announcer, fed by lbp's health checks.
func NewBGPPart(c *config.Cluster, node string, lbp *LBPart, log *slog.Logger) (*BGPPart, error) {
	cfg, err := BGPConfigFromCluster(c, node)
	if err != nil {
		return nil, err
	}
	log = log.With("part", "bgp")
	cfg.Logger = log
	ann, err := bgp.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	health := func() bgp.Health { return bgp.Ready } // no load balancer (--no-lb): the node itself is the check
	if lbp != nil {
		health = lbp.BGPHealth
	}
	return &BGPPart{ann: ann, health: health, log: log}, nil
}

// LoopbackVIPPart puts the VIP on lo in vip.mode bgp, so the load balancer
// on it accepts what the routers send here. It is a part of its own,
// started before the load balancer and so stopped after it: on SIGTERM the
// route goes first (BGPPart), the load balancer drains, and only then does
// the address leave; without it the sessions still draining through this
// node would lose their packets.
type LoopbackVIPPart struct{ lo *vip.Link }

// NewLoopbackVIPPart is the VIP of c on lo.
func NewLoopbackVIPPart(c *config.Cluster) (*LoopbackVIPPart, error) {
	lo, err := vip.New("lo", []netip.Addr{c.VIPAddr()})
	if err != nil {
		return nil, fmt.Errorf("agent: bgp: %w", err)
	}
	return &LoopbackVIPPart{lo: lo}, nil
}

// Name implements Part.
func (p *LoopbackVIPPart) Name() string { return "vip-lo" }

// Start adds the VIP to lo (no lifetime: it is not a claim, every node has it).
func (p *LoopbackVIPPart) Start(context.Context, func(error)) error {
	if err := p.lo.Take(0); err != nil {
		return fmt.Errorf("agent: bgp: %w", err)
	}
	return nil
}

// Stop removes it.
func (p *LoopbackVIPPart) Stop(context.Context) error {
	if err := p.lo.Release(); err != nil {
		return fmt.Errorf("agent: bgp: %w", err)
	}
	return nil
}

// Name implements Part.
func (p *BGPPart) Name() string { return "bgp" }

// Start opens the sessions and follows the health.
func (p *BGPPart) Start(ctx context.Context, fail func(error)) error {
	if err := p.ann.Start(ctx); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.mu.Lock()
	p.cancel, p.done = cancel, done
	p.mu.Unlock()
	go func() {
		defer close(done)
		p.follow(lctx, fail)
	}()
	return nil
}

// follow reads the health every bgpHealthInterval and feeds the announcer.
func (p *BGPPart) follow(ctx context.Context, fail func(error)) {
	tick := time.NewTicker(bgpHealthInterval)
	defer tick.Stop()
	good, last := 0, bgp.Down
	for {
		h := p.health()
		switch {
		case h == bgp.Down:
			good = 0
		case good < bgpHealthRise:
			good++
		}
		if good < bgpHealthRise {
			h = bgp.Down
		}
		// In panic every read goes to the announcer: whether a router
		// still holds the route is checked each time.
		if h != last || h == bgp.Panic {
			last = h
			if err := p.ann.SetHealth(h); err != nil {
				fail(err)
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Stop withdraws the route and waits for it to leave (and the routers to
// follow, bgp.Config.Linger) before the load balancer, stopped after this
// part, stops serving.
func (p *BGPPart) Stop(ctx context.Context) error {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return p.ann.Stop(ctx)
}

// Status implements Statuser: the sessions and whether the VIP is announced.
func (p *BGPPart) Status() any {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return p.ann.State(ctx)
}

// Pause withdraws the route for maintenance (the node keeps serving what
// is in flight) and returns once the withdrawal left, with a step detail.
func (p *BGPPart) Pause(ctx context.Context) (bool, string) {
	withdrew, err := p.ann.SetPaused(ctx, true)
	if err != nil {
		return false, err.Error()
	}
	st := p.ann.State(ctx)
	if !withdrew {
		return true, st.Route + " was not announced; it stays withdrawn during maintenance"
	}
	return true, fmt.Sprintf("%s withdrawn from %s: the routers send clients to the other nodes", st.Route, establishedPeers(st))
}

// SetPausedAtStart keeps a node that restarts in maintenance from
// announcing: call it before Start.
func (p *BGPPart) SetPausedAtStart() { _, _ = p.ann.SetPaused(context.Background(), true) }

// Resume lets the route follow the health again; it waits (up to
// vipWait) for the announcement when the node is healthy.
func (p *BGPPart) Resume(ctx context.Context) (bool, string) {
	if _, err := p.ann.SetPaused(ctx, false); err != nil {
		return false, err.Error()
	}
	var st bgp.State
	waitFor(ctx, vipWait, func() bool { st = p.ann.State(ctx); return st.Announced })
	if !st.Announced {
		return true, st.Route + " not announced yet: it is once the load balancer has a healthy apiserver"
	}
	return true, fmt.Sprintf("%s announced again to %s", st.Route, establishedPeers(st))
}

// establishedPeers names the peers with an established session: "10.0.0.1
// and 10.0.0.2", or "no established peer".
func establishedPeers(st bgp.State) string {
	var up []string
	for _, ps := range st.Peers {
		if ps.State == "established" {
			up = append(up, ps.Address)
		}
	}
	if len(up) == 0 {
		return "no established peer"
	}
	return strings.Join(up, ", ")
}
