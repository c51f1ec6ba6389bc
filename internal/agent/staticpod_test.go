package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// kubeletStandIn plays kubelet's part for one static pod: while the
// manifest is in the folder the component serves /healthz on its port
// (a real TLS server on loopback), and while it is not, nothing does.
// Kubelet itself cannot run in a unit test.
type kubeletStandIn struct {
	mu     sync.Mutex
	starts int
	srv    *httptest.Server
}

func runKubelet(t *testing.T, manifest, addr string) *kubeletStandIn {
	k := &kubeletStandIn{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_, err := os.Stat(manifest)
			k.mu.Lock()
			switch {
			case err == nil && k.srv == nil:
				ln, lerr := net.Listen("tcp", addr)
				if lerr == nil {
					k.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
					k.srv.Listener = ln
					k.srv.StartTLS()
					k.starts++
				}
			case err != nil && k.srv != nil:
				k.srv.Close()
				k.srv = nil
			}
			k.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
		k.mu.Lock()
		if k.srv != nil {
			k.srv.Close()
		}
		k.mu.Unlock()
	}()
	t.Cleanup(func() { cancel(); <-done })
	return k
}

func (k *kubeletStandIn) startCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.starts
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestStaticPodsRestart(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "manifests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, KubeScheduler+".yaml")
	if err := os.WriteFile(manifest, []byte("kind: Pod\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	k := runKubelet(t, manifest, addr)
	s := StaticPods{ManifestDir: dir, HoldDir: filepath.Join(root, "held"), Healthz: map[string]string{KubeScheduler: "https://" + addr + "/healthz"},
		Timeout: 10 * time.Second, Poll: 20 * time.Millisecond}
	deadline := time.Now().Add(5 * time.Second)
	for k.startCount() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Restart(context.Background(), KubeScheduler); err != nil {
		t.Fatal(err)
	}
	if n := k.startCount(); n != 2 {
		t.Errorf("the component started %d times, want 2 (once more after the restart)", n)
	}
	if data, err := os.ReadFile(manifest); err != nil || string(data) != "kind: Pod\n" {
		t.Errorf("manifest after the restart: %q, %v", data, err)
	}
	if ents, _ := os.ReadDir(s.HoldDir); len(ents) != 0 {
		t.Errorf("%d files left in the hold folder", len(ents))
	}

	// A component kubelet does not run here is refused, nothing moved.
	if err := s.Restart(context.Background(), KubeControllerManager); err == nil || !errors.Is(err, ErrNotStaticPod) {
		t.Errorf("Restart of a component without a manifest = %v", err)
	}

	// Cancelled while waiting for the pod to stop: the manifest is back.
	ctx, cancel := context.WithCancel(context.Background())
	stuck := StaticPods{ManifestDir: dir, HoldDir: s.HoldDir, Healthz: map[string]string{KubeScheduler: "https://" + addr + "/healthz"},
		Timeout: time.Hour, Poll: 20 * time.Millisecond}
	// The stand-in stops serving only after it sees the manifest gone; a
	// cancel right away returns before or after that, the manifest put
	// back either way.
	cancel()
	_ = stuck.Restart(ctx, KubeScheduler)
	if _, err := os.Stat(manifest); err != nil {
		t.Errorf("a cancelled restart left the manifest out: %v", err)
	}
}
