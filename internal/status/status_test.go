package status

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFetchAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"ready":true}`)) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	go srv.Serve(tcp)
	t.Cleanup(func() { srv.Close() })
	for _, tc := range []struct {
		name, addr, sock, want, err string
	}{
		{name: "unix socket", addr: "ignored:1", sock: sock, want: `{"ready":true}`},
		{name: "local API", addr: tcp.Addr().String(), want: `{"ready":true}`},
		{name: "not the status path", addr: tcp.Addr().String() + "/nothing", err: "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := FetchAgent(context.Background(), tc.addr, tc.sock)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || string(body) != tc.want {
				t.Fatalf("got %q, %v; want %q", body, err, tc.want)
			}
		})
	}
}

func TestLoadClusterSaysWhyInOneLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"no flag", "", "no cluster file (--config)"},
		{"missing", filepath.Join(dir, "none.yaml"), "no cluster file " + filepath.Join(dir, "none.yaml") + " (--config)"},
		{"does not load", bad, "cluster file " + bad + " does not load: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, why := LoadCluster(tc.path)
			if c != nil || !strings.HasPrefix(why, tc.want) || strings.Contains(why, "\n") {
				t.Errorf("got %v, %q; want nil and one line starting %q", c, why, tc.want)
			}
		})
	}
}

func TestLeaseHoldersSkipsWithoutKubeconfig(t *testing.T) {
	for _, tc := range []struct{ kubeconfig, want string }{
		{"", "kubernetes leases: skipped: no --kubeconfig"},
		{"/nonexistent/admin.conf", "kubernetes leases: skipped: no kubeconfig /nonexistent/admin.conf (--kubeconfig)"},
	} {
		hs, note := LeaseHolders(context.Background(), tc.kubeconfig)
		if hs != nil || note != tc.want {
			t.Errorf("LeaseHolders(%q) = %v, %q; want nil, %q", tc.kubeconfig, hs, note, tc.want)
		}
	}
}
