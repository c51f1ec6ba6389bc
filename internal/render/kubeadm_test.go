package render

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haplane/haplane/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

func exampleCluster(t *testing.T, o config.ExampleOptions) *config.Cluster {
	t.Helper()
	c, err := config.Parse("haplane.yaml", config.Example(o))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var kubeadmCases = []struct {
	name string
	opts config.ExampleOptions
}{
	{"stacked", config.ExampleOptions{}},
	{"external", config.ExampleOptions{EtcdNodes: []config.EtcdNode{{Name: "etcd1", Address: "10.77.0.21"}, {Name: "etcd2", Address: "10.77.0.22"}, {Name: "etcd3", Address: "10.77.0.23"}}}},
}

func TestKubeadmGolden(t *testing.T) {
	for _, tc := range kubeadmCases {
		t.Run(tc.name, func(t *testing.T) {
			files, err := Kubeadm(exampleCluster(t, tc.opts))
			if err != nil {
				t.Fatal(err)
			}
			wantFiles := 5 // init; join + cluster for the two others
			if tc.name == "external" {
				wantFiles = 8 // and one per etcd host
			}
			if len(files) != wantFiles {
				t.Fatalf("%d files, want %d", len(files), wantFiles)
			}
			for i, f := range files {
				golden(t, filepath.Join("kubeadm", tc.name, f.Host, f.Name), f.Data)
				kinds := kindsOf(f.Data)
				switch {
				case i == 0 && kinds != "InitConfiguration,ClusterConfiguration",
					i > 0 && f.Name == "kubeadm.yaml" && kinds != "JoinConfiguration",
					f.Name != "kubeadm.yaml" && kinds != "ClusterConfiguration":
					t.Errorf("%s/%s: kinds %s", f.Host, f.Name, kinds)
				}
			}
		})
	}
}

func kindsOf(data []byte) string {
	var kinds []string
	for _, line := range strings.Split(string(data), "\n") {
		if k, ok := strings.CutPrefix(line, "kind: "); ok {
			kinds = append(kinds, k)
		}
	}
	return strings.Join(kinds, ",")
}

// TestKubeadmConfigValidate runs the real kubeadm (v1.37.1, built by
// tools/k8s/build.sh; CI sets HAPLANE_K8S_BIN) on every rendered file.
func TestKubeadmConfigValidate(t *testing.T) {
	bin := os.Getenv("HAPLANE_K8S_BIN")
	if bin == "" {
		t.Skip("HAPLANE_K8S_BIN is not set: build real kubeadm with tools/k8s/build.sh and point HAPLANE_K8S_BIN at its directory to run this test")
	}
	kubeadm := filepath.Join(bin, "kubeadm")
	// kubeadm checks that the discovery kubeconfig exists.
	discovery := filepath.Join(t.TempDir(), "admin.conf")
	if err := os.WriteFile(discovery, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range kubeadmCases {
		files, err := kubeadmWith(exampleCluster(t, tc.opts), discovery)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			p := filepath.Join(t.TempDir(), f.Name)
			if err := os.WriteFile(p, f.Data, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(kubeadm, "config", "validate", "--config", p).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "ok") || strings.Contains(string(out), "WARNING") {
				t.Errorf("%s %s/%s: kubeadm config validate: %v\n%s\n---\n%s", tc.name, f.Host, f.Name, err, out, f.Data)
			}
		}
	}
}
