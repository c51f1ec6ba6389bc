package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The etcd commands' argument handling; the cluster behaviour behind them
// is tested with real members in internal/etcdnode and by bench/etcd.sh.
func TestEtcdCommandsUsage(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haplane.yaml")
	if code, _, stderr := run(t, "init", "--out", cfg); code != 0 {
		t.Fatalf("init: %d %s", code, stderr)
	}
	bad := filepath.Join(dir, "bad.db")
	if err := os.WriteFile(bad, []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"etcd", "run", "--config", cfg}, ExitUsage, "--node is required"},
		{[]string{"etcd", "run", "--config", cfg, "--node", "nope"}, ExitUsage, `"nope" is not an etcd member`},
		{[]string{"etcd", "restore", bad, "--config", cfg}, ExitUsage, "--node is required"},
		{[]string{"etcd", "restore", bad, "--config", cfg, "--node", "cp1", "--data-dir", filepath.Join(dir, "d")}, ExitFailure, "snapshot is corrupt"},
		{[]string{"etcd", "snapshot", "verify", bad}, ExitFailure, "snapshot is corrupt"},
		{[]string{"etcd", "replace", "nope", "--config", cfg}, ExitUsage, `"nope" is not an etcd member`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[:2], " "), func(t *testing.T) {
			code, _, stderr := run(t, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Fatalf("%v: exit %d stderr %q; want exit %d mentioning %q", tt.args, code, stderr, tt.code, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); !os.IsNotExist(err) {
		t.Error("a refused restore created the data dir")
	}
}

func TestRenderEtcd(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haplane.yaml")
	if code, _, stderr := run(t, "init", "--out", cfg); code != 0 {
		t.Fatalf("init: %d %s", code, stderr)
	}
	out := filepath.Join(dir, "out")
	code, stdout, stderr := run(t, "--output", "json", "render", "etcd", "--config", cfg, "--out", out)
	if code != 0 {
		t.Fatalf("render etcd: %d %s", code, stderr)
	}
	var res renderResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || len(res.Files) != 6 {
		t.Fatalf("result %s: %v", stdout, err)
	}
	data, err := os.ReadFile(filepath.Join(out, "cp2", "manifests", "etcd.yaml"))
	if err != nil || !strings.Contains(string(data), "--name=cp2") {
		t.Fatalf("cp2 manifest: %v\n%s", err, data)
	}
}
