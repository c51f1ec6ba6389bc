package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// testQuota is the backend quota of the NOSPACE test's members: small, so
// a few dozen writes fill it.
const testQuota = 2 << 20

// fillUntilNoSpace overwrites a few keys with 32 KiB values until a Put
// fails with etcd's NOSPACE error: the history of old revisions, not the
// live data, fills the database, as with an apiserver whose compaction
// stopped. It returns the puts that succeeded.
func fillUntilNoSpace(t *testing.T, tc *testCluster) int {
	t.Helper()
	cli := tc.newClient()
	value := strings.Repeat("x", 32<<10)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if i > 1000 || time.Now().After(deadline) {
			t.Fatalf("no NOSPACE after %d puts of 32KiB with a %d byte quota", i, testQuota)
		}
		ctx, cancel := contextWithTimeout(5 * time.Second)
		_, err := cli.Put(ctx, fmt.Sprintf("/registry/fill/%d", i%4), value)
		cancel()
		if err == nil {
			continue
		}
		if !errors.Is(err, rpctypes.ErrNoSpace) {
			t.Fatalf("put %d: %v, want %v", i, err, rpctypes.ErrNoSpace)
		}
		return i
	}
}

// TestDefragRecoversFromNoSpace fills a real three-member cluster past its
// quota, checks that status reports the NOSPACE alarm, then compacts,
// defragments member by member and disarms, and checks that writes work
// again and status is healthy.
func TestDefragRecoversFromNoSpace(t *testing.T) {
	tc := newTestCluster(t, 3)
	for i := range tc.nodes {
		tc.nodes[i].Member.QuotaBackendBytes = testQuota
	}
	start := time.Now()
	tc.startInProcess("m0", "m1", "m2")
	tc.waitHealthy(3, 20*time.Second)
	t.Logf("3 members healthy in %s", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	puts := fillUntilNoSpace(t, tc)
	t.Logf("NOSPACE after %d puts (%s)", puts, time.Since(start).Round(time.Millisecond))

	// What haplane etcd status reports: the alarm, and no fault tolerance.
	p := tc.prober(time.Second)
	var rep Report
	waitFor(t, 5*time.Second, "NOSPACE alarm in the report", func() error {
		rep = p.Probe(context.Background(), tc.targets())
		if !slices.ContainsFunc(rep.Alarms, func(a string) bool { return strings.HasPrefix(a, "NOSPACE on ") }) {
			return fmt.Errorf("alarms %v", rep.Alarms)
		}
		return nil
	})
	if rep.Verdict == VerdictHealthy || rep.FaultTolerant {
		t.Fatalf("with NOSPACE: verdict %s fault tolerant %v", rep.Verdict, rep.FaultTolerant)
	}
	if rep.Verdict != VerdictNoFaultTolerance || rep.ServingVoters != 3 {
		t.Errorf("with NOSPACE every member still serves reads: verdict %s serving voters %d, want %s and 3",
			rep.Verdict, rep.ServingVoters, VerdictNoFaultTolerance)
	}
	var sizeBefore int64
	for _, m := range rep.Members {
		if m.Healthy || len(m.Alarms) == 0 || m.Quota != testQuota {
			t.Errorf("member %s: healthy %v alarms %v quota %d, want unhealthy, the alarm, quota %d", m.Name, m.Healthy, m.Alarms, m.Quota, testQuota)
		}
		sizeBefore = max(sizeBefore, m.DBSize)
	}
	t.Logf("with NOSPACE: verdict %s, %d of %d healthy, %d serving, alarms %v, largest db %d bytes", rep.Verdict, rep.HealthyVoters, rep.Voters, rep.ServingVoters, rep.Alarms, sizeBefore)

	ops := tc.ops()
	ctx, cancel := contextWithTimeout(30 * time.Second)
	defer cancel()

	// A member that fails stops the run, naming what was done.
	_, err := ops.Defragment(ctx, DefragOptions{MemberTimeout: time.Nanosecond})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "defragmented: none; not defragmented: ") {
		t.Fatalf("defrag with no time: %v", err)
	}

	start = time.Now()
	res, err := ops.Defragment(ctx, DefragOptions{Compact: true, Disarm: true})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("defrag: %v (%+v)", err, res)
	}
	if res.CompactedRevision == 0 || len(res.Members) != 3 || len(res.Disarmed) == 0 || len(res.Alarms) != 0 || len(res.Pending) != 0 {
		t.Fatalf("result %+v", res)
	}
	if res.Members[0].Leader || res.Members[1].Leader {
		t.Errorf("order %+v: want the leader last", res.Members)
	}
	for _, m := range res.Members {
		t.Logf("%s (leader %v): %d -> %d bytes (in use %d -> %d) of %d in %.0fms", m.Name, m.Leader,
			m.DBSizeBefore, m.DBSizeAfter, m.DBSizeInUseBefore, m.DBSizeInUseAfter, m.Quota, m.Seconds*1000)
		if m.DBSizeAfter >= m.DBSizeBefore/2 || m.DBSizeAfter >= testQuota || m.Quota != testQuota {
			t.Errorf("%s: %d -> %d bytes of %d: want less than half", m.Name, m.DBSizeBefore, m.DBSizeAfter, m.Quota)
		}
	}
	t.Logf("compact to %d, defrag of 3 members and disarm of %v took %s", res.CompactedRevision, res.Disarmed, took.Round(time.Millisecond))

	cli := tc.newClient()
	if _, err := cli.Put(ctx, "/registry/after", "ok"); err != nil {
		t.Fatalf("put after the defrag: %v", err)
	}
	rep = p.Probe(context.Background(), tc.targets())
	if rep.Verdict != VerdictHealthy || !rep.FaultTolerant || len(rep.Alarms) != 0 {
		t.Fatalf("after the defrag: verdict %s tolerant %v alarms %v", rep.Verdict, rep.FaultTolerant, rep.Alarms)
	}
	for _, m := range rep.Members {
		if m.DBSize >= sizeBefore/2 {
			t.Errorf("%s: db %d bytes after, %d before", m.Name, m.DBSize, sizeBefore)
		}
	}

	// With a member down, defragmenting another could block the quorum.
	tc.stopInProcess("m2")
	res, err = ops.Defragment(ctx, DefragOptions{})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "m2") || len(res.Members) != 0 {
		t.Fatalf("defrag with m2 down: %v (%+v)", err, res)
	}
}
