package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestJudgeRecover(t *testing.T) {
	peer := func(name string, rev int64) RecoverPeer { return RecoverPeer{Name: name, Revision: rev} }
	for _, tc := range []struct {
		name   string
		voters int
		reach  []RecoverPeer
		accept bool
		want   error
	}{
		{"three, none left", 3, nil, false, nil},
		{"three, one left: a quorum with the survivor", 3, []RecoverPeer{peer("b", 10)}, false, ErrQuorumReachable},
		{"three, two left", 3, []RecoverPeer{peer("b", 10), peer("c", 10)}, false, ErrQuorumReachable},
		{"five, one left, older", 5, []RecoverPeer{peer("b", 90)}, false, nil},
		{"five, one left, same", 5, []RecoverPeer{peer("b", 100)}, false, nil},
		{"five, one left, newer", 5, []RecoverPeer{peer("b", 101)}, false, ErrNewerMember},
		{"five, one left, newer, loss accepted", 5, []RecoverPeer{peer("b", 101)}, true, nil},
		{"five, two left", 5, []RecoverPeer{peer("b", 1), peer("c", 1)}, false, ErrQuorumReachable},
		{"one member", 1, nil, false, ErrQuorumReachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := RecoverPlan{Survivor: "a", Revision: 100, Voters: tc.voters, Quorum: Quorum(tc.voters), Reachable: tc.reach}
			err := judgeRecover(p, tc.accept)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("judgeRecover = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestRecoverFromLastMember loses two of three members for good (killed,
// data dirs deleted) and recovers from the third: every write acknowledged
// before the fault is there, and the cluster is back to three voters with
// the other two rejoined from empty data dirs. On the way, the refusals:
// while the survivor runs, and while a quorum is reachable. The members
// run on loopback: Recover runs in the test process, as the CLI runs on
// the survivor's host.
func TestRecoverFromLastMember(t *testing.T) {
	tc := startThree(t)
	ctx := context.Background()
	cli := tc.newClient()
	acked := map[string]string{}
	for i := range 200 {
		k, v := fmt.Sprintf("/acked/%03d", i), fmt.Sprintf("v%d", i)
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		acked[k] = v
	}
	// A follower learns of a commit with the leader's next message: wait
	// until m0, the survivor to be, applied the last write, or it would be
	// lost with the quorum (as the plan says: writes beyond what the
	// survivor applied are lost).
	m0 := tc.newClient(tc.node("m0").Member.ClientURL())
	waitFor(t, 10*time.Second, "m0 applied every write", func() error {
		r, err := m0.Get(ctx, "/acked/199", clientv3.WithSerializable())
		if err != nil || len(r.Kvs) != 1 {
			return fmt.Errorf("last write not on m0: %v", err)
		}
		return nil
	})
	opts := func() RecoverOptions {
		n := tc.node("m0")
		return RecoverOptions{Member: n.Member, Client: n.Client, Targets: n.Targets, ProbeTimeout: time.Second, StartTimeout: 30 * time.Second}
	}
	log := slog.New(slog.DiscardHandler)
	dataDir := tc.node("m0").Member.DataDir
	noBackup := func() {
		t.Helper()
		if m, _ := filepath.Glob(strings.TrimRight(dataDir, "/") + ".pre-recover-*"); len(m) != 0 {
			t.Fatalf("a refused recovery left %v", m)
		}
	}

	if _, err := Recover(ctx, opts(), time.Now(), log); !errors.Is(err, ErrMemberRunning) {
		t.Fatalf("recover while m0 runs: %v, want ErrMemberRunning", err)
	}
	noBackup()
	// The survivor is stopped by the operator, cleanly: a member killed
	// with kill -9 may not have flushed its last commit index (etcd syncs
	// the WAL for new entries, not for a commit index alone), and a forced
	// new cluster discards what is past the commit index it finds.
	tc.stopProcess("m0")
	if _, err := Recover(ctx, opts(), time.Now(), log); !errors.Is(err, ErrQuorumReachable) {
		t.Fatalf("recover while m1 and m2 run: %v, want ErrQuorumReachable", err)
	}
	tc.kill9("m2")
	_, err := Recover(ctx, opts(), time.Now(), log)
	if !errors.Is(err, ErrQuorumReachable) || !strings.Contains(err.Error(), "m1 answers") {
		t.Fatalf("recover while m1 runs (m0 and m1 make a quorum): %v, want ErrQuorumReachable naming m1", err)
	}
	noBackup()
	tc.kill9("m1")
	for _, n := range []string{"m1", "m2"} {
		if err := os.RemoveAll(tc.node(n).Member.DataDir); err != nil {
			t.Fatal(err)
		}
	}

	plan, err := PlanRecover(ctx, opts())
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	// The database file may lag the WAL (a killed member), so the plan's
	// revision is a lower bound only.
	if plan.Exact || plan.Revision <= 0 || len(plan.Dropped) != 2 || !strings.Contains(plan.Loss, "m1, m2") {
		t.Fatalf("plan %+v: want a revision, m1 and m2 dropped", plan)
	}
	start := time.Now()
	got, err := Recover(ctx, opts(), start, log)
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if got.Backup == "" || !HasData(got.Backup) || !got.Exact ||
		got.Keys < int64(len(acked)) || got.Revision < int64(len(acked)) || got.Revision < plan.Revision {
		t.Fatalf("recover: %+v: want a copy of the data dir and at least %d keys (plan: revision %d)", got, len(acked), plan.Revision)
	}

	// The operator's next steps: start the survivor as usual, then the
	// others on their empty data dirs.
	tc.startProcess("m0")
	tc.startProcess("m1", "m2")
	tc.waitHealthy(3, 60*time.Second)
	t.Logf("recovered to three voting members in %v", time.Since(start).Round(time.Millisecond))
	cli = tc.newClient()
	for _, n := range []string{"m0", "m1", "m2"} {
		c := tc.newClient(tc.node(n).Member.ClientURL())
		r, err := c.Get(ctx, "/acked/", clientv3.WithPrefix(), clientv3.WithSerializable())
		if err != nil {
			t.Fatalf("read %s: %v", n, err)
		}
		have := map[string]string{}
		for _, kv := range r.Kvs {
			have[string(kv.Key)] = string(kv.Value)
		}
		if !mapsEqual(have, acked) {
			t.Fatalf("%s holds %d of the %d acknowledged writes", n, len(have), len(acked))
		}
	}
	if _, err := cli.Put(ctx, "/after", "x"); err != nil {
		t.Fatalf("write after the recovery: %v", err)
	}
}
