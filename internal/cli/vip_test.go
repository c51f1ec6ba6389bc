package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVIPRunUsageErrors(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "haplane.yaml")
	if code, _, stderr := run(t, "init", "--out", f); code != 0 {
		t.Fatalf("init exit %d: %s", code, stderr)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no node", []string{"vip", "run", "--config", f}, "--node"},
		{"unknown node", []string{"vip", "run", "--config", f, "--node", "nope"}, `node "nope" is not in the cluster file`},
		{"invalid cluster file", []string{"vip", "run", "--config", bad, "--node", "cp1"}, "problem"},
		{"extra argument", []string{"vip", "run", "--config", f, "--node", "cp1", "extra"}, "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != ExitUsage {
				t.Errorf("exit %d, want %d; stderr %s", code, ExitUsage, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not mention %q", stderr, tc.want)
			}
		})
	}
}
