package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/config"
)

// TestNodeLocalFollowsMaintenance: a worker's node-local load balancer
// leaves out of its pool the apiserver of a control-plane node whose agent
// reports maintenance (read as the control plane reads its peers), sends
// every new session to the other one meanwhile, and takes it back once
// the node leaves maintenance.
func TestNodeLocalFollowsMaintenance(t *testing.T) {
	addrs := []string{"127.0.78.11", "127.0.78.12"}
	c, root := loopbackCluster(t, "127.0.78.100", 17443+os.Getpid()%1000, addrs...)
	c.LoadBalancer.NodeLocal = config.NodeLocalLB{Listen: "127.0.0.1:0", Discovery: config.DiscoveryNone}
	apis := map[string]string{}
	for _, n := range c.Nodes {
		apis[n.Name] = net.JoinHostPort(n.Address, fmt.Sprint(c.ControlPlaneEndpoint.APIServerPort))
	}
	startStubAPIs(t, c, root)
	roots, err := LoadCertPool(filepath.Join(root, "cp1", "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	np, err := NewNodeLocalPart(c, roots, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := np.Start(ctx, func(error) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = np.Stop(ctx) })

	// cp1's agent: its /status says whether it is in maintenance.
	var inMaint atomic.Bool
	peer := func(maint *atomic.Bool) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, `{"maintenance":{"active":%v},"parts":{"lb":{"backends":[]}}}`, maint != nil && maint.Load())
		}))
	}
	p1, p2 := peer(&inMaint), peer(nil)
	defer p1.Close()
	defer p2.Close()
	w := &PeerWatcher{Peers: map[string]string{"cp1": p1.URL, "cp2": p2.URL}, Client: p1.Client(), Interval: 100 * time.Millisecond}
	np.FollowMaintenance(w, apis)
	if err := w.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop(ctx) }()

	lbAddr := np.lb.Addrs()[0].String()
	waitSeen := func(want map[string]bool, why string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			seen := map[string]bool{}
			for range 10 {
				seen[versionVia(t, lbAddr)] = true
			}
			if fmt.Sprint(seen) == fmt.Sprint(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: sessions reached %v, want %v; pool %+v", why, seen, want, np.lb.Backends())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitSeen(map[string]bool{"cp1": true, "cp2": true}, "before maintenance")
	inMaint.Store(true)
	waitSeen(map[string]bool{"cp2": true}, "cp1 in maintenance")
	// Held: every session of a while goes to cp2.
	for range 20 {
		if got := versionVia(t, lbAddr); got != "cp2" {
			t.Fatalf("a session went to %s while cp1 is in maintenance", got)
		}
	}
	if p := np.pool(); len(p) != 2 {
		t.Errorf("the pool (what discovery and status show) lost a node: %v", p)
	}
	inMaint.Store(false)
	waitSeen(map[string]bool{"cp1": true, "cp2": true}, "after maintenance")
}
