package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/haplane/haplane/internal/pki"
)

// TestInstallJoined: a join's files land under out and the cluster file at
// configOut; a second install into the same folder is refused and leaves
// what is there.
func TestInstallJoined(t *testing.T) {
	dir := t.TempDir()
	out, configOut := filepath.Join(dir, "kubernetes"), filepath.Join(dir, "haplane", "haplane.yaml")
	files := map[string]pki.File{
		"pki/ca.crt":      {Data: []byte("ca"), Mode: 0o644},
		"pki/etcd/ca.crt": {Data: []byte("etcd ca"), Mode: 0o644},
		"admin.conf":      {Data: []byte("admin"), Mode: 0o600},
	}
	written, err := InstallJoined(out, configOut, files, []byte("cluster"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"admin.conf", "pki/ca.crt", "pki/etcd/ca.crt"}; !slices.Equal(written, want) {
		t.Errorf("written %v, want %v", written, want)
	}
	for p, f := range files {
		got, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || string(got) != string(f.Data) {
			t.Errorf("%s: %q, %v", p, got, err)
		}
	}
	if got, _ := os.ReadFile(configOut); string(got) != "cluster" {
		t.Errorf("cluster file %q", got)
	}
	files["pki/ca.crt"] = pki.File{Data: []byte("other ca"), Mode: 0o644}
	if _, err := InstallJoined(out, configOut, files, []byte("other")); err == nil || !strings.Contains(err.Error(), "exists; nothing written") {
		t.Fatalf("second install: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "pki", "ca.crt")); string(got) != "ca" {
		t.Errorf("a refused install changed pki/ca.crt to %q", got)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 2 {
		t.Errorf("out holds %d entries after a refused install, want 2 (no temporary folder left)", len(entries))
	}
}
