package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func keySet(t *testing.T, cli *clientv3.Client, opts ...clientv3.OpOption) (map[string]string, int64) {
	t.Helper()
	resp, err := cli.Get(context.Background(), "", append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out, resp.Header.Revision
}

// TestSnapshotRestore: snapshot, more writes, wipe every member, restore
// every member from the same snapshot. The cluster then holds exactly the
// keys at the snapshot's revision, under a new token, with the revision
// bumped and the old revisions compacted (so watchers relist).
func TestSnapshotRestore(t *testing.T) {
	tc := newTestCluster(t, 3)
	tc.startInProcess("m0", "m1", "m2")
	cli := tc.newClient()
	ctx := context.Background()
	for i := range 40 {
		if _, err := cli.Put(ctx, fmt.Sprintf("k/%02d", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if _, err := cli.Delete(ctx, fmt.Sprintf("k/%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := keySet(t, cli)

	// A linearizable read through m1 first: m1 is a follower and may not
	// have applied the last delete yet when the snapshot is asked for, and
	// a snapshot holds what its member has applied.
	m1 := tc.newClient(tc.node("m1").Member.ClientURL())
	if got, _ := keySet(t, m1); !mapsEqual(got, want) {
		t.Fatalf("m1 reads %d keys after a linearizable read, the cluster %d", len(got), len(want))
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	info, err := SaveSnapshot(ctx, m1, path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Keys != len(want) {
		t.Fatalf("snapshot has %d keys, cluster had %d", info.Keys, len(want))
	}
	atSnap, _ := keySet(t, cli, clientv3.WithRev(info.Revision))
	if !mapsEqual(atSnap, want) {
		t.Fatalf("keys at snapshot revision %d differ from the keys read before it", info.Revision)
	}
	if _, err := os.Stat(path + ".part"); !os.IsNotExist(err) {
		t.Errorf("partial file left behind: %v", err)
	}

	t.Run("corrupt snapshot refused", func(t *testing.T) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for name, mutate := range map[string]func([]byte) []byte{
			"flipped byte": func(b []byte) []byte { b = slices.Clone(b); b[len(b)/2] ^= 0xff; return b },
			"truncated":    func(b []byte) []byte { return b[:len(b)-100] },
			"empty":        func([]byte) []byte { return nil },
		} {
			bad := filepath.Join(t.TempDir(), "bad.db")
			if err := os.WriteFile(bad, mutate(data), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := VerifySnapshot(bad); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Errorf("%s: %v, want ErrSnapshotCorrupt", name, err)
			}
			dir := filepath.Join(t.TempDir(), "data")
			if _, err := Restore(RestoreOptions{Snapshot: bad, Name: "m0", Members: tc.node("m0").Member.InitialCluster, DataDir: dir, Token: "x"}, time.Now(), nil); err == nil {
				t.Errorf("%s: restore accepted a corrupt snapshot", name)
			}
		}
	})

	t.Run("refused while the member runs", func(t *testing.T) {
		o := tc.node("m0").Member
		token := RestoreToken("test", info.SHA256)
		// The running member holds the lock of its database.
		_, err := Restore(RestoreOptions{Snapshot: path, Name: "m0", Members: o.InitialCluster, DataDir: o.DataDir, Token: token}, time.Now(), nil)
		if !errors.Is(err, ErrMemberRunning) || !strings.Contains(err.Error(), "stop etcd on this node first") {
			t.Fatalf("restore into a running member's data dir: %v, want ErrMemberRunning", err)
		}
		t.Logf("refusal: %v", err)
		// A data dir elsewhere, but the member answers on the client URL.
		other := filepath.Join(t.TempDir(), "data")
		_, err = Restore(RestoreOptions{Snapshot: path, Name: "m0", Members: o.InitialCluster, DataDir: other, Token: token, ClientURL: o.ClientURL()}, time.Now(), nil)
		if !errors.Is(err, ErrMemberRunning) || !strings.Contains(err.Error(), o.ClientURL()) {
			t.Fatalf("restore with the member answering: %v, want ErrMemberRunning", err)
		}
		if _, err := os.Stat(other); !os.IsNotExist(err) {
			t.Errorf("refused restore created %s", other)
		}
		if m, _ := filepath.Glob(o.DataDir + ".pre-restore-*"); len(m) != 0 || !HasData(o.DataDir) {
			t.Errorf("refused restore touched the data dir: moved %v, has data %v", m, HasData(o.DataDir))
		}
	})

	memberList, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldClusterID := memberList.Header.ClusterId

	// Writes after the snapshot are lost by the restore, by design.
	if _, err := cli.Put(ctx, "k/after", "x"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"m0", "m1", "m2"} {
		tc.stopInProcess(n)
	}
	token := RestoreToken("test", info.SHA256)
	if again := RestoreToken("test", info.SHA256); again == token || !strings.HasPrefix(again, "test-restore-"+info.SHA256[:12]+"-") {
		t.Fatalf("two restores of one snapshot: tokens %q and %q, want different ones of the same stem", token, again)
	}
	now := time.Date(2026, 11, 22, 20, 0, 0, 0, time.UTC)
	for _, n := range []string{"m0", "m1", "m2"} {
		o := tc.node(n).Member
		moved, err := Restore(RestoreOptions{Snapshot: path, Name: n, Members: o.InitialCluster, DataDir: o.DataDir, Token: token}, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		if moved == "" || !HasData(moved) {
			t.Fatalf("old data dir not kept: %q", moved)
		}
	}
	tc.startInProcess("m0", "m1", "m2")
	tc.waitHealthy(3, 30*time.Second)
	cli2 := tc.newClient()
	got, rev := keySet(t, cli2)
	if !mapsEqual(got, want) {
		t.Fatalf("after restore: %d keys, want exactly the %d at the snapshot (k/after must be gone: %v)", len(got), len(want), got["k/after"] != "")
	}
	if rev < info.Revision+DefaultRevisionBump {
		t.Fatalf("revision %d after restore, want at least %d + %d", rev, info.Revision, DefaultRevisionBump)
	}
	memberList, err = cli2.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if memberList.Header.ClusterId == oldClusterID {
		t.Fatalf("cluster ID %x unchanged by the restore", oldClusterID)
	}
	t.Logf("cluster ID %x -> %x (token %s)", oldClusterID, memberList.Header.ClusterId, token)
	// A watcher resuming at its old revision is told it was compacted.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	wr := <-cli2.Watch(wctx, "k/", clientv3.WithPrefix(), clientv3.WithRev(info.Revision))
	if !errors.Is(wr.Err(), rpctypes.ErrCompacted) {
		t.Fatalf("watch from old revision %d: %v, want compacted", info.Revision, wr.Err())
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestSchedulerOnlyElectedTakesAndRetains: only the elected node writes
// snapshots, and the newest Retain are kept. The clock is synctest's.
func TestSchedulerOnlyElectedTakesAndRetains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		elected := map[string]bool{"a": true, "b": false}
		var scheds []*Scheduler
		for _, name := range []string{"a", "b"} {
			scheds = append(scheds, &Scheduler{
				Dir: filepath.Join(dir, name), Interval: time.Minute, Retain: 3,
				Elected: func(context.Context) (bool, error) { return elected[name], nil },
				Save: func(_ context.Context, path string) error {
					return os.WriteFile(path, []byte(name), 0o600)
				},
			})
		}
		ctx, cancel := context.WithCancel(context.Background())
		for _, s := range scheds {
			go s.Run(ctx)
		}
		time.Sleep(5*time.Minute + time.Second)
		synctest.Wait()
		cancel()
		a, _ := os.ReadDir(filepath.Join(dir, "a"))
		b, _ := os.ReadDir(filepath.Join(dir, "b"))
		if len(a) != 3 || len(b) != 0 {
			t.Fatalf("elected node kept %d snapshots (want 3), other took %d (want 0)", len(a), len(b))
		}
		// The newest are kept: fake time started at 2000-01-01 00:00 UTC.
		if a[0].Name() != "etcd-snapshot-20000101T000300.000Z.db" || a[2].Name() != "etcd-snapshot-20000101T000500.000Z.db" {
			t.Errorf("kept %v", []string{a[0].Name(), a[1].Name(), a[2].Name()})
		}
	})
}

// TestSchedulerPrunesOnEveryNode: leadership moves from a to b after
// three ticks. Both dirs start with old snapshots (more than Retain, as
// after Retain was lowered) and a partial file of a killed save. The node
// that is not elected prunes too, from the first tick on, and after the
// move each node keeps only its own newest Retain.
func TestSchedulerPrunesOnEveryNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		var leader atomic.Value
		leader.Store("a")
		seed := func(name string) {
			d := filepath.Join(dir, name)
			for i := range 5 {
				writeFile(t, filepath.Join(d, fmt.Sprintf("etcd-snapshot-19991231T23590%d.000Z.db", i)), []byte("old"))
			}
			writeFile(t, filepath.Join(d, "etcd-snapshot-19991231T235959.000Z.db.part"), []byte("partial"))
			writeFile(t, filepath.Join(d, "notes.txt"), []byte("not a snapshot: kept"))
		}
		ls := func(name string) []string {
			ents, err := os.ReadDir(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, e := range ents {
				out = append(out, e.Name())
			}
			return out
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for _, name := range []string{"a", "b"} {
			seed(name)
			s := &Scheduler{Dir: filepath.Join(dir, name), Interval: time.Minute, Retain: 2,
				Elected: func(context.Context) (bool, error) { return leader.Load() == name, nil },
				Save:    func(_ context.Context, path string) error { return os.WriteFile(path, []byte(name), 0o600) },
			}
			go s.Run(ctx)
		}
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		wantB := []string{"etcd-snapshot-19991231T235903.000Z.db", "etcd-snapshot-19991231T235904.000Z.db", "notes.txt"}
		if got := ls("b"); !slices.Equal(got, wantB) {
			t.Fatalf("not elected b after one tick: %v, want %v (pruned, partial gone)", got, wantB)
		}
		if got := ls("a"); len(got) != 3 || got[1] != "etcd-snapshot-20000101T000100.000Z.db" {
			t.Fatalf("elected a after one tick: %v", got)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		leader.Store("b")
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		cancel()
		wantA := []string{"etcd-snapshot-20000101T000200.000Z.db", "etcd-snapshot-20000101T000300.000Z.db", "notes.txt"}
		wantB = []string{"etcd-snapshot-20000101T000500.000Z.db", "etcd-snapshot-20000101T000600.000Z.db", "notes.txt"}
		if got := ls("a"); !slices.Equal(got, wantA) {
			t.Errorf("former leader a: %v, want %v", got, wantA)
		}
		if got := ls("b"); !slices.Equal(got, wantB) {
			t.Errorf("leader b: %v, want %v", got, wantB)
		}
	})
}

// TestSchedulerWithLeaderCheck: on a real cluster exactly one member (the
// raft leader) takes a scheduled snapshot, and it verifies.
func TestSchedulerWithLeaderCheck(t *testing.T) {
	tc := newTestCluster(t, 3)
	tc.startInProcess("m0", "m1", "m2")
	tc.waitHealthy(3, 20*time.Second)
	dir := t.TempDir()
	taken := 0
	for _, n := range []string{"m0", "m1", "m2"} {
		tc.mu.Lock()
		m := tc.mems[n]
		tc.mu.Unlock()
		cli := tc.newClient(m.Config().ClientURL())
		s := &Scheduler{Dir: dir, Retain: 2, Elected: m.LeaderCheck,
			Save: func(ctx context.Context, path string) error { _, err := SaveSnapshot(ctx, cli, path); return err }}
		p, err := s.Once(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if p != "" {
			taken++
			if _, err := VerifySnapshot(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if taken != 1 {
		t.Fatalf("%d members took the scheduled snapshot, want exactly 1", taken)
	}
}
