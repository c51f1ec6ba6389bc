package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
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
