package etcdnode

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// NodeOptions is what Enter needs to bring this node's member into the
// cluster: the member itself, the desired members from the cluster file,
// and a client identity for membership changes.
type NodeOptions struct {
	// Member is this node's member; Member.InitialCluster is the desired
	// member list of the cluster file.
	Member Config
	// Client is the client certificate used for membership changes.
	Client ClientTLS
	// Targets are every member of the cluster file with its client URL.
	Targets []Target
	// ProbeTimeout bounds the probe of the cluster (default 2s).
	ProbeTimeout time.Duration
	// PromoteInterval is the retry period of the promotion (default 500ms).
	PromoteInterval time.Duration
	// StartTimeout bounds the start of the member (default 5m: a new
	// cluster waits for a quorum of members to start).
	StartTimeout time.Duration
}

// Enter decides how this node enters the cluster (see Decide), carries the
// plan out, starts the member and, when it joined as a learner, promotes
// it once it has caught up. On error nothing it started keeps running.
func Enter(ctx context.Context, o NodeOptions, log *slog.Logger) (*Member, Plan, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = 2 * time.Second
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 5 * time.Minute
	}
	cfg := o.Member.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, Plan{}, err
	}
	tc, err := o.Client.Config()
	if err != nil {
		return nil, Plan{}, err
	}
	// Probe the other members only: this one is not running.
	var others []Target
	var endpoints []string
	for _, t := range o.Targets {
		if t.Name != cfg.Name {
			others = append(others, t)
			endpoints = append(endpoints, t.Endpoint)
		}
	}
	prober := NewProber(tc, o.ProbeTimeout, 0)
	defer prober.Close()
	ops := &Ops{Prober: prober, Targets: others, Log: log}
	if len(endpoints) > 0 {
		cli, err := NewClient(endpoints, tc, o.ProbeTimeout)
		if err != nil {
			return nil, Plan{}, err
		}
		defer cli.Close()
		ops.Client = cli
	}

	self := Peer{Name: cfg.Name, PeerURL: cfg.PeerURL()}
	var live []LiveMember
	if len(others) > 0 {
		live, _ = ops.Live(ctx)
	}
	plan, err := Decide(PlanInput{Self: self, Desired: cfg.InitialCluster, HasData: HasData(cfg.DataDir), Live: live})
	if err != nil {
		return nil, plan, err
	}
	log.Info("etcd cluster plan", "action", plan.Action, "reason", plan.Reason)

	learner := uint64(0)
	switch plan.Action {
	case ActionBootstrap:
		cfg.InitialCluster, cfg.ClusterState = plan.InitialCluster, StateNew
	case ActionRestart:
		cfg.ClusterState = StateExisting
	case ActionJoin:
		for _, m := range plan.Remove {
			if err := ops.remove(ctx, m); err != nil {
				return nil, plan, err
			}
		}
		if plan.AddLearner {
			id, peers, err := ops.AddLearner(ctx, cfg.Name, self.PeerURL)
			if err != nil {
				return nil, plan, err
			}
			learner, cfg.InitialCluster = id, peers
		} else {
			peers, err := ops.InitialClusterFor(ctx, cfg.Name, self.PeerURL)
			if err != nil {
				return nil, plan, err
			}
			cfg.InitialCluster = peers
			if m, ok := find(live, "", self.PeerURL); ok {
				learner = m.ID
			}
		}
		cfg.ClusterState = StateExisting
	}

	m, err := New(cfg, log)
	if err != nil {
		return nil, plan, err
	}
	sctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	if err := m.Start(sctx); err != nil {
		return nil, plan, err
	}
	if plan.Action == ActionRestart && ops.Client != nil {
		// A member restarted after it was added as a learner but before
		// its promotion finishes the promotion now.
		if l, ok := find(live, cfg.Name, self.PeerURL); ok && l.Learner {
			learner = l.ID
		}
	}
	if learner != 0 {
		if ops.Client == nil {
			m.Stop()
			return nil, plan, fmt.Errorf("etcdnode: learner %x has no other member to promote it", learner)
		}
		if err := ops.Promote(ctx, learner, o.PromoteInterval); err != nil {
			m.Stop()
			return nil, plan, err
		}
	}
	return m, plan, nil
}

// TargetsFor pairs member names with client URLs at addr:port.
func TargetsFor(peers []Peer, clientURL func(name string) string) []Target {
	out := make([]Target, 0, len(peers))
	for _, p := range peers {
		out = append(out, Target{Name: p.Name, Endpoint: clientURL(p.Name)})
	}
	return slices.Clip(out)
}
