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
			// kubeadm join reads the ClusterConfiguration from the
			// kubeadm-config ConfigMap, i.e. cp1's: every control-plane
			// node's copy must be that same document, nothing of its own.
			_, shared, ok := strings.Cut(string(files[0].Data), "---\n")
			if !ok {
				t.Fatalf("%s/%s has no ClusterConfiguration document", files[0].Host, files[0].Name)
			}
			for _, f := range files {
				if f.Name == "kubeadm-cluster.yaml" && !strings.HasSuffix(string(f.Data), "\n"+shared) {
					t.Errorf("%s/%s is not the ClusterConfiguration of %s/%s", f.Host, f.Name, files[0].Host, files[0].Name)
				}
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

// TestKubeadmInitEtcdDryRun runs the real kubeadm's etcd phase in dry-run
// mode on the first node's rendered config: its stacked etcd must start as a
// one-member cluster of its own, with its own name and addresses, since the
// other nodes join it later with `kubeadm join --control-plane` (member add).
func TestKubeadmInitEtcdDryRun(t *testing.T) {
	bin := os.Getenv("HAPLANE_K8S_BIN")
	if bin == "" {
		t.Skip("HAPLANE_K8S_BIN is not set: build real kubeadm with tools/k8s/build.sh and point HAPLANE_K8S_BIN at its directory to run this test")
	}
	dir := t.TempDir()
	c := exampleCluster(t, config.ExampleOptions{})
	// Keep every path kubeadm reads or mentions inside the test's folder.
	c.Certificates.Dir = filepath.Join(dir, "pki")
	c.Etcd.DataDir = filepath.Join(dir, "etcd")
	files, err := kubeadmWith(c, filepath.Join(dir, "admin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "kubeadm.yaml")
	if err := os.WriteFile(cfg, files[0].Data, 0o644); err != nil {
		t.Fatal(err)
	}
	dryRunDir := filepath.Join(dir, "dryrun")
	cmd := exec.Command(filepath.Join(bin, "kubeadm"), "init", "phase", "etcd", "local", "--config", cfg, "--dry-run")
	// Without it kubeadm puts its dry-run output under /etc/kubernetes/tmp.
	cmd.Env = append(os.Environ(), "KUBEADM_INIT_DRYRUN_DIR="+dryRunDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubeadm init phase etcd local --dry-run: %v\n%s", err, out)
	}
	flags := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f, ok := strings.CutPrefix(strings.TrimSpace(line), "- --"); ok {
			k, v, _ := strings.Cut(f, "=")
			if _, dup := flags[k]; dup {
				t.Errorf("etcd flag --%s given twice", k)
			}
			flags[k] = v
		}
	}
	n := c.Nodes[0]
	want := map[string]string{
		"name":                        n.Name,
		"initial-cluster":             n.Name + "=https://" + n.Address + ":2380",
		"advertise-client-urls":       "https://" + n.Address + ":2379",
		"initial-advertise-peer-urls": "https://" + n.Address + ":2380",
		"listen-peer-urls":            "https://" + n.Address + ":2380",
		"listen-client-urls":          "https://127.0.0.1:2379,https://" + n.Address + ":2379",
		"data-dir":                    c.Etcd.DataDir,
	}
	for k, v := range want {
		if flags[k] != v {
			t.Errorf("etcd --%s=%q, want %q", k, flags[k], v)
		}
	}
	// kubeadm init leaves out --initial-cluster-state (etcd's default: new);
	// a rendered "existing" or a second member here would keep cp1's etcd
	// from ever forming a quorum.
	if s, ok := flags["initial-cluster-state"]; ok && s != "new" {
		t.Errorf("etcd --initial-cluster-state=%s, want new or unset", s)
	}
	for _, other := range c.Nodes[1:] {
		if strings.Contains(string(out), other.Address) {
			t.Errorf("cp1's etcd manifest mentions %s (%s):\n%s", other.Name, other.Address, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dryRunDir, "etcd.yaml")); err != nil {
		t.Errorf("kubeadm did not use the test's dry-run folder: %v\n%s", err, out)
	}
}
