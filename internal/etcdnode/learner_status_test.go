package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// TestStatusLearnerAsEtcdctl runs a one-member cluster and a learner that
// is never promoted. Each member's Healthy must be etcdctl endpoint
// health's verdict, taken the way etcdctl takes it (a linearizable Get of
// "health" on that endpoint): the voter healthy, the learner not. The
// learner still reports serving, with a read latency, and the plan sees
// it alive so it is never removed as stale.
func TestStatusLearnerAsEtcdctl(t *testing.T) {
	tc := newTestCluster(t, 2)
	tc.nodes[0].Member.InitialCluster = tc.nodes[0].Member.InitialCluster[:1]
	tc.startInProcess("m0")
	ctx := context.Background()
	ops := tc.ops()
	waitFor(t, 10*time.Second, "m0 healthy", func() error {
		if _, rep := ops.Live(ctx); rep.HealthyVoters != 1 {
			return fmt.Errorf("healthy voters %d", rep.HealthyVoters)
		}
		return nil
	})
	n := tc.node("m1")
	id, peers, err := ops.AddLearner(ctx, "m1", n.Member.PeerURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg := n.Member
	cfg.InitialCluster, cfg.ClusterState = peers, StateExisting
	m, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.Start(sctx); err != nil {
		t.Fatal(err)
	}
	tc.mu.Lock()
	tc.mems["m1"] = m
	tc.mu.Unlock()

	// etcdctl endpoint health, per endpoint.
	etcdctlHealthy := func(endpoint string) (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := tc.newClient(endpoint).Get(cctx, "health")
		return err == nil || errors.Is(err, rpctypes.ErrPermissionDenied), err
	}
	p := tc.prober(2 * time.Second)
	var rep Report
	waitFor(t, 20*time.Second, "learner serving", func() error {
		rep = p.Probe(ctx, tc.targets())
		for _, r := range rep.Members {
			if r.Name == "m1" && r.Learner && r.Serving {
				return nil
			}
		}
		return fmt.Errorf("%+v", rep.Members)
	})
	for _, r := range rep.Members {
		want, err := etcdctlHealthy(r.Endpoint)
		t.Logf("%s learner=%v: haplane healthy=%v serving=%v read %.4fs (%s); etcdctl healthy=%v (%v)",
			r.Name, r.Learner, r.Healthy, r.Serving, r.ReadLatency, r.Error, want, err)
		if r.Healthy != want {
			t.Errorf("%s: healthy %v, etcdctl endpoint health says %v (%v)", r.Name, r.Healthy, want, err)
		}
		switch r.Name {
		case "m0":
			if !r.Healthy || r.Learner {
				t.Errorf("voter m0: %+v", r)
			}
		case "m1":
			if r.Healthy || !r.Learner || !r.Serving || r.ReadLatency <= 0 || !strings.Contains(r.Error, "learner") {
				t.Errorf("learner m1: want unhealthy (as etcdctl) yet serving with a latency: %+v", r)
			}
		}
	}
	if rep.Voters != 1 || rep.HealthyVoters != 1 || rep.Verdict != VerdictNoFaultTolerance {
		t.Errorf("report: voters %d healthy %d verdict %s", rep.Voters, rep.HealthyVoters, rep.Verdict)
	}
	live := rep.Live()
	l, ok := find(live, "m1", "")
	if !ok || l.ID != id || !l.Learner || !l.Healthy {
		t.Fatalf("the plan must see the serving learner %x alive: %+v", id, live)
	}
	// A rebuilt m1 elsewhere would not remove this live learner.
	if _, err := Decide(PlanInput{Self: Peer{Name: "m1", PeerURL: n.Member.PeerURL()}, Desired: peers, Live: live}); err == nil ||
		!strings.Contains(err.Error(), "healthy") {
		t.Errorf("plan against a live learner: %v, want a refusal", err)
	}
}
