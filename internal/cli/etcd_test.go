package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haplane/haplane/internal/etcdnode"
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
		{[]string{"etcd", "recover", "--config", cfg}, ExitUsage, "--from is required"},
		{[]string{"etcd", "recover", "--config", cfg, "--from", "nope"}, ExitUsage, `"nope" is not an etcd member`},
		{[]string{"etcd", "recover", "--config", cfg, "--from", "cp1", "--data-dir", filepath.Join(dir, "d"), "--yes"}, ExitUsage, "invalid member config"},
		{[]string{"etcd", "replace", "nope", "--config", cfg}, ExitUsage, `"nope" is not an etcd member`},
		{[]string{"etcd", "defrag", "--config", cfg, "--defrag-timeout", "0"}, ExitUsage, "--defrag-timeout 0s: must be positive"},
		{[]string{"etcd", "defrag", "--config", cfg, "--compact=maybe"}, ExitUsage, `invalid argument "maybe"`},
		{[]string{"etcd", "defrag", "--config", filepath.Join(dir, "none.yaml")}, ExitUsage, "none.yaml"},
		{[]string{"etcd", "defrag", "--config", cfg, "--pki-dir", filepath.Join(dir, "nopki"), "--compact", "--disarm"}, ExitFailure, "load client TLS"},
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

func TestPrintDefrag(t *testing.T) {
	res := etcdnode.DefragResult{
		CompactedRevision: 57,
		Members: []etcdnode.DefragMember{
			{Name: "cp2", ID: "b2", Endpoint: "https://10.0.0.2:2379", DBSizeBefore: 2359296, DBSizeAfter: 155648, DBSizeInUseAfter: 147456, Quota: 2 << 20, Seconds: 0.029},
			{Name: "cp1", ID: "a1", Endpoint: "https://10.0.0.1:2379", Leader: true, DBSizeBefore: 2387968, DBSizeAfter: 155648, DBSizeInUseAfter: 147456, Quota: 2 << 20, Seconds: 0.025},
		},
		Pending:  []string{"cp3"},
		Disarmed: []string{"NOSPACE on a1"},
	}
	var b strings.Builder
	if err := etcdnode.WriteDefrag(&b, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"compacted to revision 57", "2.3MiB", "152.0KiB", "2.0MiB", "29ms", "not defragmented: cp3", "disarmed: NOSPACE on a1"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}

	// status under NOSPACE points at the fix.
	b.Reset()
	rep := etcdnode.Report{Voters: 3, ServingVoters: 3, Quorum: 2, FaultTolerance: 1, Verdict: etcdnode.VerdictNoFaultTolerance, Alarms: []string{"NOSPACE on a1"}}
	if err := etcdnode.WriteReport(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"0 of 3 voting members healthy (3 serving, alarms aside)", "haplane etcd defrag --compact --disarm"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}
}
