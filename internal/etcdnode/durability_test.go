package etcdnode

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKill9NoAcknowledgedWriteLost runs three members as processes. A
// writer puts keys continuously and records every write the cluster
// acknowledged. One follower is killed with SIGKILL, then the leader (which
// leaves no quorum); both are restarted from their data dirs. Every
// acknowledged write must read back afterwards. As root the members are
// separate hosts (see asHosts).
func TestKill9NoAcknowledgedWriteLost(t *testing.T) {
	if asHosts(t, 3) {
		return
	}
	tc := startThree(t)
	cli := tc.newClient()

	var (
		mu    sync.Mutex // protects acked
		acked []string
		tried atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		// Bounded: at most 100k puts, and it stops when the test cancels.
		for i := 0; i < 100_000 && ctx.Err() == nil; i++ {
			key := fmt.Sprintf("w/%06d", i)
			tried.Add(1)
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := cli.Put(pctx, key, key)
			pcancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, key)
				mu.Unlock()
			}
		}
	}()
	defer func() { cancel(); <-writerDone }()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }

	waitFor(t, 20*time.Second, "writes acknowledged", func() error {
		if count() < 50 {
			return fmt.Errorf("%d acked", count())
		}
		return nil
	})
	leader, follower := tc.leaderAndFollower()
	t.Logf("kill -9 follower %s at %d acked writes", follower, count())
	tc.kill9(follower)
	before := count()
	waitFor(t, 20*time.Second, "writes continue with 2 of 3", func() error {
		if count() < before+50 {
			return fmt.Errorf("%d acked since the kill", count()-before)
		}
		return nil
	})
	t.Logf("kill -9 leader %s at %d acked writes (no quorum left)", leader, count())
	tc.kill9(leader)
	time.Sleep(time.Second)

	tc.startProcess(follower, leader)
	tc.waitHealthy(3, 60*time.Second)
	after := count()
	waitFor(t, 30*time.Second, "writes resume", func() error {
		if count() < after+50 {
			return fmt.Errorf("%d acked since recovery", count()-after)
		}
		return nil
	})
	cancel()
	<-writerDone

	mu.Lock()
	want := append([]string(nil), acked...)
	mu.Unlock()
	resp, err := tc.newClient().Get(context.Background(), "w/", clientPrefix()...)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, kv := range resp.Kvs {
		have[string(kv.Key)] = true
	}
	lost := 0
	for _, k := range want {
		if !have[k] {
			lost++
			if lost < 10 {
				t.Errorf("acknowledged write %s lost", k)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", lost, len(want))
	}
	t.Logf("%d puts tried, %d acknowledged, all read back (%d keys present)", tried.Load(), len(want), len(have))
}

// leaderAndFollower names the current leader and one follower.
func (tc *testCluster) leaderAndFollower() (leader, follower string) {
	tc.t.Helper()
	p := tc.prober(time.Second)
	waitFor(tc.t, 10*time.Second, "a leader", func() error {
		rep := p.Probe(context.Background(), tc.targets())
		leader, follower = "", ""
		for _, m := range rep.Members {
			switch {
			case m.Leader:
				leader = m.Name
			case m.Healthy:
				follower = m.Name
			}
		}
		if leader == "" || follower == "" {
			return fmt.Errorf("leader %q follower %q", leader, follower)
		}
		return nil
	})
	return leader, follower
}
