package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
)

// TestEtcdPartTakesScheduledSnapshots runs the agent's etcd part (a real
// one-member cluster on a loopback address, with the kubeadm certificate
// set) with scheduled snapshots: its member leads, so it takes them, and
// keeps only the newest ones.
func TestEtcdPartTakesScheduledSnapshots(t *testing.T) {
	addr := "127.0.77.1"
	// Built in code: a cluster file refuses loopback addresses, which a
	// test without network namespaces needs.
	c := &config.Cluster{Name: "snap", ControlPlaneEndpoint: config.Endpoint{VIP: "127.0.77.100"}, Nodes: []config.Node{{Name: "cp1", Address: addr}}}
	c.SetDefaults()
	_, root := testPKI(t, "127.0.77.100", addr)
	snaps := t.TempDir()
	failed := make(chan error, 1)
	part := startEtcdPart(t, c, filepath.Join(root, "cp1", "pki"), filepath.Join(root, "data"),
		&etcdnode.SnapshotSchedule{Dir: snaps, Interval: 200 * time.Millisecond, Retain: 2}, func(err error) { failed <- err })
	list := func() []string {
		entries, _ := os.ReadDir(snaps)
		var out []string
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".db") {
				out = append(out, e.Name())
			}
		}
		return out
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(list()) < 2 {
		select {
		case err := <-failed:
			t.Fatalf("etcd part failed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshots after 60s: %v; want 2", list())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A few more intervals: still the 2 newest only.
	time.Sleep(time.Second)
	if got := list(); len(got) != 2 {
		t.Errorf("snapshots %v, want the 2 newest", got)
	}
	if !part.Ready() {
		t.Error("the part does not report ready")
	}
}

// startEtcdPart starts the agent's etcd part for node cp1 of c (PKI in
// pkiDir, data under dataDir, no metrics listener), with scheduled snapshots
// when snaps is not nil, reporting a failure to failed; the part stops at
// the end of the test.
func startEtcdPart(t *testing.T, c *config.Cluster, pkiDir, dataDir string, snaps *etcdnode.SnapshotSchedule, failed func(error)) *EtcdPart {
	t.Helper()
	opts, err := EtcdNodeOptions(c, "cp1", pkiDir, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	opts.Member.MetricsURL = "none"
	part := NewEtcdPart(opts, slog.New(slog.DiscardHandler))
	if snaps != nil {
		part = part.WithSnapshots(*snaps)
	}
	startPart(t, part, failed, 20*time.Second)
	return part
}
