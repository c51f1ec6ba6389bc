package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestMembership runs one 3-member TLS cluster in-process through the
// membership stories of the issue: readiness endpoints, status of a dead
// member within one probe, a quorum-losing removal refused, a rebuilt node
// rejoining on its own (stale entry cleaned, learner, promotion), and the
// operator's replace flow.
func TestMembership(t *testing.T) {
	tc := newTestCluster(t, 3)
	start := time.Now()
	tc.startInProcess("m0", "m1", "m2")
	t.Logf("3-member TLS cluster ready in %v", time.Since(start))
	rep := tc.waitHealthy(3, 20*time.Second)
	if rep.Verdict != VerdictHealthy || !rep.FaultTolerant {
		t.Fatalf("fresh cluster: verdict %s fault tolerant %v", rep.Verdict, rep.FaultTolerant)
	}

	t.Run("kubeadm listeners", func(t *testing.T) {
		for _, path := range []string{"/livez", "/readyz", "/metrics"} {
			resp, err := http.Get(tc.node("m0").Member.MetricsURL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
			}
		}
		// haplane builds no client without a certificate (that the
		// member refuses one is TestClientCertAuthEnforced).
		cfg, _ := ClientTLS{CertFile: "", KeyFile: "", CAFile: tc.pki.CAFile}.Config()
		if cfg != nil {
			t.Fatal("client TLS without a certificate accepted")
		}
	})

	ctx := context.Background()
	cli := tc.newClient()
	if _, err := cli.Put(ctx, "before", "x"); err != nil {
		t.Fatal(err)
	}

	// m2 dies.
	tc.stopInProcess("m2")
	t.Run("status sees a dead member within one probe", func(t *testing.T) {
		const interval = time.Second
		p := tc.prober(interval)
		begin := time.Now()
		rep := p.Probe(ctx, tc.targets())
		took := time.Since(begin)
		if took > interval+500*time.Millisecond {
			t.Errorf("probe took %v, want about one interval (%v)", took, interval)
		}
		var dead *MemberStatus
		for i := range rep.Members {
			if rep.Members[i].Name == "m2" {
				dead = &rep.Members[i]
			}
		}
		if dead == nil || dead.Healthy || dead.Reachable {
			t.Fatalf("m2 should be unreachable and unhealthy: %+v", rep.Members)
		}
		if rep.HealthyVoters != 2 || rep.Verdict != VerdictNoFaultTolerance || rep.FaultTolerant {
			t.Fatalf("2 of 3: healthy %d verdict %s tolerant %v", rep.HealthyVoters, rep.Verdict, rep.FaultTolerant)
		}
	})

	ops := tc.ops()
	t.Run("removing a healthy member from 2 of 3 is refused", func(t *testing.T) {
		_, err := ops.Remove(ctx, "m1", "")
		if !errors.Is(err, ErrQuorum) {
			t.Fatalf("remove m1 with m2 down: %v, want ErrQuorum", err)
		}
		if !strings.Contains(err.Error(), "2 of 3 voting members are healthy") {
			t.Errorf("error does not explain the quorum: %v", err)
		}
		t.Logf("refusal: %v", err)
		resp, err := cli.MemberList(ctx)
		if err != nil || len(resp.Members) != 3 {
			t.Fatalf("member list after refusal: %v %v", resp, err)
		}
	})

	t.Run("rebuilt node rejoins by itself", func(t *testing.T) {
		_, plan := tc.rebuild(ctx, "m2")
		if plan.Action != ActionJoin || len(plan.Remove) != 1 || plan.Remove[0].Name != "m2" || !plan.AddLearner {
			t.Fatalf("plan %+v: want join removing stale m2 and adding a learner", plan)
		}
		tc.waitHealthy(3, 30*time.Second)
		if r, err := tc.newClient(tc.node("m2").Member.ClientURL()).Get(ctx, "before"); err != nil || len(r.Kvs) != 1 {
			t.Fatalf("rejoined member lacks data: %v %v", r, err)
		}
	})

	t.Run("replace a dead member", func(t *testing.T) {
		tc.stopInProcess("m1")
		if _, _, err := ops.Replace(ctx, "m0", tc.node("m0").Member.PeerURL()); err == nil || !strings.Contains(err.Error(), "healthy") {
			t.Fatalf("replace of the healthy m0: %v, want a refusal", err)
		}
		removed, added, err := ops.Replace(ctx, "m1", tc.node("m1").Member.PeerURL())
		if err != nil {
			t.Fatal(err)
		}
		if len(removed) != 1 || removed[0].Name != "m1" || added == 0 {
			t.Fatalf("replace: removed %+v added %x", removed, added)
		}
		m, plan := tc.rebuild(ctx, "m1")
		if plan.Action != ActionJoin || plan.AddLearner || len(plan.Remove) != 0 {
			t.Fatalf("plan %+v: want to finish the join of the added learner", plan)
		}
		if m.ID() != added {
			t.Fatalf("member ID %x, replace added %x", m.ID(), added)
		}
		rep := tc.waitHealthy(3, 30*time.Second)
		if rep.Verdict != VerdictHealthy {
			t.Fatalf("verdict %s", rep.Verdict)
		}
	})

	t.Run("remove keeps quorum when healthy", func(t *testing.T) {
		// The long-lived prober must see the replaced member come back.
		waitFor(t, 10*time.Second, "ops prober sees 3 healthy", func() error {
			if _, rep := ops.Live(ctx); rep.HealthyVoters != 3 {
				return fmt.Errorf("healthy voters %d", rep.HealthyVoters)
			}
			return nil
		})
		m, err := ops.Remove(ctx, "m2", "")
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "removed member stops", func() error {
			tc.mu.Lock()
			mem := tc.mems["m2"]
			tc.mu.Unlock()
			select {
			case <-mem.Done():
				return nil
			default:
				return fmt.Errorf("member %s still running", m.label())
			}
		})
		resp, err := cli.MemberList(ctx)
		if err != nil || len(resp.Members) != 2 {
			t.Fatalf("after remove: %v %v", resp, err)
		}
	})
}

// TestReplaceDeadMember runs three members as processes (separate hosts
// when root). A member dies (kill -9) and the operator replaces it on the
// same name and address (Ops.Replace, what `haplane etcd replace` does);
// the rebuilt node starts on an empty data dir and the cluster is back to
// three voting members with no etcdctl step. Then another member is
// rebuilt without any operator step at all: it cleans up its own stale
// entry, joins as a learner and is promoted.
func TestReplaceDeadMember(t *testing.T) {
	if asHosts(t, 3) {
		return
	}
	tc := startThree(t)
	ctx := context.Background()
	cli := tc.newClient()
	if _, err := cli.Put(ctx, "before", "x"); err != nil {
		t.Fatal(err)
	}
	ids := func() map[string]uint64 {
		t.Helper()
		resp, err := cli.MemberList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]uint64{}
		for _, m := range resp.Members {
			if m.IsLearner {
				t.Fatalf("member %s %x is still a learner", m.Name, m.ID)
			}
			out[m.Name] = m.ID
		}
		if len(out) != 3 {
			t.Fatalf("members %v, want m0 m1 m2", out)
		}
		return out
	}
	hasData := func(name string) {
		t.Helper()
		r, err := tc.newClient(tc.node(name).Member.ClientURL()).Get(ctx, "before", clientv3.WithSerializable())
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("%s lacks the data: %v %v", name, r, err)
		}
	}
	old := ids()

	tc.kill9("m1")
	ops := tc.ops()
	var removed []LiveMember
	var added uint64
	waitFor(t, 10*time.Second, "replace of the dead m1", func() error {
		var err error
		removed, added, err = ops.Replace(ctx, "m1", tc.node("m1").Member.PeerURL())
		return err
	})
	if len(removed) != 1 || removed[0].ID != old["m1"] || added == 0 || added == old["m1"] {
		t.Fatalf("replace: removed %+v added %x (old m1 %x)", removed, added, old["m1"])
	}
	if err := os.RemoveAll(tc.node("m1").Member.DataDir); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tc.startProcess("m1")
	if rep := tc.waitHealthy(3, 30*time.Second); rep.Verdict != VerdictHealthy {
		t.Fatalf("after replace: verdict %s", rep.Verdict)
	}
	t.Logf("replaced m1 back as a voting member in %v", time.Since(start).Round(time.Millisecond))
	if now := ids(); now["m1"] != added {
		t.Fatalf("m1 is %x, replace added %x", now["m1"], added)
	}
	hasData("m1")

	tc.kill9("m2")
	if err := os.RemoveAll(tc.node("m2").Member.DataDir); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	tc.startProcess("m2")
	if rep := tc.waitHealthy(3, 30*time.Second); rep.Verdict != VerdictHealthy {
		t.Fatalf("after rebuild: verdict %s", rep.Verdict)
	}
	t.Logf("rebuilt m2 rejoined by itself in %v", time.Since(start).Round(time.Millisecond))
	if now := ids(); now["m2"] == old["m2"] {
		t.Fatalf("m2 kept its old ID %x: the stale entry was not replaced", old["m2"])
	}
	hasData("m2")
}
