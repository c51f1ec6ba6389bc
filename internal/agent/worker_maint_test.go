package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"github.com/haplane/haplane/internal/stubapi"
)

// TestNodeLocalFollowsMaintenance: a worker's node-local load balancer
// leaves out of its pool the apiserver of a control-plane node whose agent
// reports maintenance (read as the control plane reads its peers), sends
// every new session to the other one meanwhile, and takes it back once
// the node leaves maintenance.
func TestNodeLocalFollowsMaintenance(t *testing.T) {
	addrs := []string{"127.0.78.11", "127.0.78.12"}
	_, root := testPKI(t, "127.0.78.100", addrs...)
	var nodes []config.Node
	for i := range addrs {
		nodes = append(nodes, config.Node{Name: fmt.Sprintf("cp%d", i+1), Address: fmt.Sprintf("10.77.9.%d", 21+i)})
	}
	c, err := config.Parse("haplane.yaml", config.Example(config.ExampleOptions{VIP: "10.77.9.100", Interface: "lo", Nodes: nodes}))
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range addrs {
		c.Nodes[i].Address = a // onto loopback after validation, as startMaintAgent does
	}
	c.ControlPlaneEndpoint.APIServerPort = 17443 + os.Getpid()%1000
	c.LoadBalancer.NodeLocal = config.NodeLocalLB{Listen: "127.0.0.1:0", Discovery: config.DiscoveryNone}
	apis := map[string]string{}
	for i, a := range addrs {
		addr := net.JoinHostPort(a, fmt.Sprint(c.ControlPlaneEndpoint.APIServerPort))
		apis[nodes[i].Name] = addr
		cert, err := tls.LoadX509KeyPair(filepath.Join(root, nodes[i].Name, "pki", "apiserver.crt"), filepath.Join(root, nodes[i].Name, "pki", "apiserver.key"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := stubapi.Start(stubapi.Config{Addr: addr, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Name: nodes[i].Name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	caPEM, err := os.ReadFile(filepath.Join(root, "cp1", "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
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
