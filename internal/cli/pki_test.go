package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestPKIGenerateAndCheck(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haplane.yaml")
	out := filepath.Join(dir, "hosts")
	if code, _, stderr := run(t, "init", "--out", cfg); code != 0 {
		t.Fatal(stderr)
	}
	if code, _, stderr := run(t, "pki", "generate", "--config", cfg, "--out", out); code != 0 {
		t.Fatalf("generate: %s", stderr)
	}
	code, stdout, stderr := run(t, "-o", "json", "pki", "check", "--config", cfg, "--dir", filepath.Join(out, "cp2", "pki"))
	var res pkiCheckResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != 0 || !res.OK || res.Node != "cp2" || len(res.Certs) != 14 {
		t.Fatalf("check: exit %d, %v, %+v\n%s", code, err, res, stderr)
	}
	// A second run keeps everything.
	code, stdout, _ = run(t, "-o", "json", "pki", "generate", "--config", cfg, "--out", out)
	var gen pkiGenerateResult
	if err := json.Unmarshal([]byte(stdout), &gen); err != nil || code != 0 || gen.Written != 0 {
		t.Fatalf("re-run wrote %d files (exit %d, %v)", gen.Written, code, err)
	}
	// cp1's apiserver certificate in cp2's folder: SAN drift, exit 1.
	data, _ := os.ReadFile(filepath.Join(out, "cp1", "pki", "apiserver.crt"))
	if err := os.WriteFile(filepath.Join(out, "cp2", "pki", "apiserver.crt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, _ := run(t, "pki", "check", "--config", cfg, "--dir", filepath.Join(out, "cp2", "pki")); code != ExitFailure {
		t.Fatalf("drifted certificate: exit %d\n%s", code, stdout)
	}
	// Everything expires within 400 days: exit 1.
	if code, _, _ := run(t, "pki", "check", "--dir", filepath.Join(out, "cp1", "pki"), "--warn", "400d"); code != ExitFailure {
		t.Fatalf("--warn 400d: exit %d", code)
	}
	if code, _, _ := run(t, "pki", "check", "--dir", filepath.Join(out, "cp1", "pki"), "--warn", "soon"); code != ExitUsage {
		t.Fatalf("--warn soon: exit %d", code)
	}
}

// TestPKICheckTableAndDefaultConfig: the table has kubeadm's columns plus
// SAN DRIFT; without --config, haplane.yaml of the working folder is the
// plan (so drift is checked), and --config "" turns it off.
func TestPKICheckTableAndDefaultConfig(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if code, _, stderr := run(t, "init", "--out", "haplane.yaml"); code != 0 {
		t.Fatal(stderr)
	}
	edit(t, "haplane.yaml", "keyAlgorithm: rsa2048", "keyAlgorithm: ecdsa-p256")
	if code, _, stderr := run(t, "pki", "generate", "--out", "hosts"); code != 0 {
		t.Fatalf("generate: %s", stderr)
	}
	code, stdout, stderr := run(t, "pki", "check", "--dir", "hosts/cp1/pki")
	if code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 15 || !regexp.MustCompile(`^CERTIFICATE +EXPIRES +RESIDUAL TIME +CA +SAN DRIFT +CHAIN +STATUS$`).MatchString(lines[0]) {
		t.Fatalf("table:\n%s", stdout)
	}
	row := regexp.MustCompile(`(?m)^apiserver +\S.* +\d+d +ca +ok +ok +ok$`)
	if !row.MatchString(stdout) || !regexp.MustCompile(`(?m)^etcd/ca +.* +self +- +ok +ok$`).MatchString(stdout) {
		t.Errorf("rows:\n%s", stdout)
	}
	// cp2's apiserver certificate in cp1's folder: the default plan sees
	// the drift, in its own column and in JSON.
	data, _ := os.ReadFile(filepath.Join("hosts", "cp2", "pki", "apiserver.crt"))
	if err := os.WriteFile(filepath.Join("hosts", "cp1", "pki", "apiserver.crt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = run(t, "-o", "json", "pki", "check", "--dir", "hosts/cp1/pki")
	var res pkiCheckResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != ExitFailure || res.OK {
		t.Fatalf("drifted: exit %d, %v\n%s", code, err, stdout)
	}
	for _, s := range res.Certs {
		if s.Name == "apiserver" && s.SANDrift != "DNS SANs [cp2 kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local], want [cp1 kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local]; IP SANs [10.96.0.1 10.77.0.12 10.77.0.100], want [10.96.0.1 10.77.0.11 10.77.0.100]" {
			t.Errorf("apiserver sanDrift = %q", s.SANDrift)
		}
	}
	if !strings.Contains(stdout, `"sanDrift": "-"`) {
		t.Errorf("CAs should report sanDrift \"-\":\n%s", stdout)
	}
	// No cluster file: expiry and chain only, and the drift goes unseen.
	code, stdout, _ = run(t, "pki", "check", "--config", "", "--dir", "hosts/cp1/pki")
	if code != 0 || regexp.MustCompile(`(?m) ok +ok +ok$`).MatchString(stdout) {
		t.Errorf("--config \"\": exit %d\n%s", code, stdout)
	}
	// A folder that is no host of the default cluster file: a clear usage
	// error naming the way out.
	if err := os.MkdirAll(filepath.Join("elsewhere", "pki"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = run(t, "pki", "check", "--dir", "elsewhere/pki")
	if code != ExitUsage || !strings.Contains(stderr, `--config ""`) {
		t.Errorf("unknown node: exit %d: %s", code, stderr)
	}
}

// TestPKIGenerateTopologyAndAlgorithmChange: moving to external etcd
// removes the control-plane hosts' etcd member files and CA key (listed in
// JSON); a stale CA key put back fails check; a key-algorithm change
// re-issues leaves and warns about the kept CAs.
func TestPKIGenerateTopologyAndAlgorithmChange(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haplane.yaml")
	out := filepath.Join(dir, "hosts")
	if code, _, stderr := run(t, "init", "--out", cfg); code != 0 {
		t.Fatal(stderr)
	}
	edit(t, cfg, "keyAlgorithm: rsa2048", "keyAlgorithm: ecdsa-p256")
	if code, _, stderr := run(t, "pki", "generate", "--config", cfg, "--out", out); code != 0 {
		t.Fatalf("generate: %s", stderr)
	}
	etcdKey, err := os.ReadFile(filepath.Join(out, "cp1", "pki", "etcd", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	edit(t, cfg, "  topology: stacked", "  topology: external\n  nodes:\n    - {name: etcd1, address: 10.77.0.21}\n    - {name: etcd2, address: 10.77.0.22}\n    - {name: etcd3, address: 10.77.0.23}")
	code, stdout, stderr := run(t, "-o", "json", "pki", "generate", "--config", cfg, "--out", out)
	var gen pkiGenerateResult
	if err := json.Unmarshal([]byte(stdout), &gen); err != nil || code != 0 {
		t.Fatalf("external: exit %d, %v\n%s", code, err, stderr)
	}
	if len(gen.Removed) != 21 || !slices.Contains(gen.Removed, "cp1/pki/etcd/ca.key") || !slices.Contains(gen.Removed, "cp3/pki/etcd/peer.crt") {
		t.Errorf("removed %v, want 7 files on each of 3 hosts", gen.Removed)
	}
	for _, f := range gen.Removed {
		if _, err := os.Stat(filepath.Join(out, f)); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want it gone", f, err)
		}
	}
	if code, stdout, _ := run(t, "pki", "check", "--config", cfg, "--dir", filepath.Join(out, "cp1", "pki")); code != 0 {
		t.Errorf("check after the move: exit %d\n%s", code, stdout)
	}
	if err := os.WriteFile(filepath.Join(out, "cp1", "pki", "etcd", "ca.key"), etcdKey, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = run(t, "pki", "check", "--config", cfg, "--dir", filepath.Join(out, "cp1", "pki"))
	if code != ExitFailure || !strings.Contains(stdout, "unexpected CA key: the plan keeps no etcd/ca key on cp1") {
		t.Errorf("stale etcd CA key: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = run(t, "pki", "generate", "--config", cfg, "--out", out)
	if code != 0 || !strings.Contains(stdout, "removed cp1/pki/etcd/ca.key: not in the plan for cp1") || !strings.Contains(stdout, "1 removed") {
		t.Errorf("generate with the stale key back: exit %d\n%s", code, stdout)
	}

	// Back to RSA: leaves re-issued, CAs kept with a warning.
	edit(t, cfg, "keyAlgorithm: ecdsa-p256", "keyAlgorithm: rsa2048")
	code, stdout, stderr = run(t, "pki", "generate", "--config", cfg, "--out", out)
	if code != 0 {
		t.Fatalf("rsa: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"warning: kept _ca/ca.crt: CA key is ecdsa-p256, the cluster file says rsa2048",
		"reissued cp1/pki/apiserver.crt: key algorithm ecdsa-p256, the cluster file says rsa2048",
		"reissued etcd1/pki/etcd/server.crt: key algorithm ecdsa-p256",
		"(0 created, 33 reissued, 4 kept, 0 removed;",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("rsa re-run lacks %q:\n%s", want, stdout)
		}
	}
}

func edit(t *testing.T, file, old, new string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s lacks %q", file, old)
	}
	if err := os.WriteFile(file, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}
