package lb_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/cli"
	"github.com/haplane/haplane/internal/lb"
)

// clusterFile writes a cluster file whose nodes are 10.77.4.11-13.
func clusterFile(t *testing.T, path string, apiPort int, nodes int, pkiDir string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: lbtest
controlPlaneEndpoint:
  vip: 10.77.4.100
  port: 8443
  apiServerPort: %d
vip:
  interface: lo
  virtualRouterID: 51
loadBalancer:
  healthCheck:
    interval: 50ms
    fall: 2
    rise: 2
certificates:
  dir: %s
nodes:
`, apiPort, pkiDir)
	for i := 1; i <= nodes; i++ {
		fmt.Fprintf(&b, "  - name: cp%d\n    address: 10.77.4.%d\n", i, 10+i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestLBRunCommand runs `haplane lb run` against three HTTPS apiservers in a
// network namespace (10.77.4.11-13) with the cluster CA in certificates.dir: traffic is spread,
// a /readyz 500 takes a backend out, /metrics and /healthz answer, SIGHUP
// applies a shorter node list, and SIGTERM-style cancellation exits 0.
func TestLBRunCommand(t *testing.T) {
	pool, caPEM, start := lb.NewTestPKI(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the apiservers live in a network namespace (the cluster file refuses loopback nodes)")
	}
	listen := lb.NewNetnsListen(t, "10.77.4.11", "10.77.4.12", "10.77.4.13")
	const port = 6443 // a fresh namespace: every port is free
	var lns []net.Listener
	for i := 1; i <= 3; i++ {
		lns = append(lns, listen(fmt.Sprintf("10.77.4.%d:%d", 10+i, port)))
	}
	var setStatus []func(int)
	var hits []func() int64
	for i, ln := range lns {
		s, h := start(ln, fmt.Sprint("cp", i+1))
		setStatus, hits = append(setStatus, s), append(hits, h)
	}
	cfg := filepath.Join(dir, "haplane.yaml")
	clusterFile(t, cfg, port, 3, dir)
	front, metrics := freeAddr(t), freeAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr bytes.Buffer
	done := make(chan struct{})
	var code int
	go func() {
		defer close(done)
		code = cli.Run(ctx, []string{"lb", "run", "--config", cfg, "--listen", front, "--metrics-addr", metrics}, nil, &stdout, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("lb run did not stop")
		}
	})

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "backend"}, DisableKeepAlives: true}}
	get := func(url string) (int, string, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; stderr:\n%s", what, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	metric := func(substr string) bool {
		_, body, err := get("http://" + metrics + "/metrics")
		return err == nil && strings.Contains(body, substr)
	}
	eventually("all backends up", func() bool {
		for i := 1; i <= 3; i++ {
			if !metric(fmt.Sprintf(`haplane_lb_backend_health{backend="10.77.4.%d:%d"} 1`, 10+i, port)) {
				return false
			}
		}
		return true
	})
	seen := map[string]int{}
	for range 9 {
		code, name, err := get("https://" + front + "/")
		if err != nil || code != 200 {
			t.Fatalf("request through lb run: %d %v", code, err)
		}
		seen[name]++
	}
	if len(seen) != 3 {
		t.Errorf("requests spread %v, want all three backends", seen)
	}
	if code, _, _ := get("http://" + metrics + "/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	if !metric("haplane_health_probe_duration_seconds_bucket") {
		t.Error("probe latency histogram missing from /metrics")
	}

	setStatus[1](500)
	// Not ready but live (it answers /livez): out of the pool while others are ready.
	eventually("cp2 not ready", func() bool { return metric(fmt.Sprintf(`haplane_lb_backend_health{backend="10.77.4.12:%d"} 3`, port)) })
	before := hits[1]()
	for range 6 {
		if _, name, err := get("https://" + front + "/"); err != nil || name == "cp2" {
			t.Fatalf("request with cp2 down: %q %v", name, err)
		}
	}
	if hits[1]() != before {
		t.Error("cp2 got requests while down")
	}

	// Drop cp3 from the file and reload.
	clusterFile(t, cfg, port, 2, dir)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	eventually("cp3 removed", func() bool { return !metric(fmt.Sprintf(`backend="10.77.4.13:%d"`, port)) })
	for range 4 {
		if _, name, err := get("https://" + front + "/"); err != nil || name != "cp1" {
			t.Fatalf("after reload: %q %v", name, err)
		}
	}

	cancel()
	select {
	case <-done:
		if code != 0 {
			t.Fatalf("lb run exited %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("lb run did not stop")
	}
	if !strings.Contains(stdout.String(), "lb: stopped") {
		t.Errorf("stdout %q", stdout.String())
	}
}
