package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run executes haplane in-process and returns its exit code and output.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestInitThenValidate(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "haplane.yaml")
	if code, _, stderr := run(t, "init", "--out", f); code != 0 {
		t.Fatalf("init exit %d: %s", code, stderr)
	}
	if code, _, _ := run(t, "init", "--out", f); code != ExitUsage {
		t.Errorf("init over an existing file: exit %d, want %d", code, ExitUsage)
	}
	code, out, stderr := run(t, "--output", "json", "validate", "--config", f)
	if code != 0 {
		t.Fatalf("validate exit %d: %s", code, stderr)
	}
	var res validateResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Valid || res.Summary.Nodes != 3 {
		t.Fatalf("validate json = %q (%v)", out, err)
	}
}

// TestValidateBGPSummary: in vip.mode bgp validate's summary names the
// local ASN, the peers and BFD, in text and JSON, and no VRRP settings.
func TestValidateBGPSummary(t *testing.T) {
	f := filepath.Join(t.TempDir(), "haplane.yaml")
	file := `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: lab
controlPlaneEndpoint: {vip: 10.77.0.100}
vip:
  mode: bgp
  bgp:
    localASN: 64512
    peers: [{address: 10.77.0.1, asn: 64513, bfd: true}]
nodes:
  - {name: cp1, address: 10.77.0.11}
  - {name: cp2, address: 10.77.0.12}
`
	if err := os.WriteFile(f, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := run(t, "validate", "--config", f)
	if want := "BGP as 64512 to 10.77.0.1 (as 64513, BFD), hold 3s, keepalive 1s"; code != 0 || !strings.Contains(out, want) || strings.Contains(out, "VRRP") {
		t.Fatalf("validate: exit %d, %q (%s), want %q", code, out, stderr, want)
	}
	code, out, _ = run(t, "-o", "json", "validate", "--config", f)
	var res struct {
		Summary map[string]json.RawMessage `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
		t.Fatalf("json validate: exit %d, %s (%v)", code, out, err)
	}
	var b struct {
		LocalASN uint32 `json:"localASN"`
		Peers    []struct {
			Address string `json:"address"`
			BFD     bool   `json:"bfd"`
		} `json:"peers"`
	}
	_, vrrp := res.Summary["vrrp"]
	if err := json.Unmarshal(res.Summary["bgp"], &b); err != nil || vrrp || string(res.Summary["vipMode"]) != `"bgp"` ||
		b.LocalASN != 64512 || len(b.Peers) != 1 || b.Peers[0].Address != "10.77.0.1" || !b.Peers[0].BFD {
		t.Errorf("json summary: %s (%v)", out, err)
	}
}

func TestValidateReportsEveryProblemWithExit2(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "haplane.yaml")
	bad := strings.NewReplacer("virtualRouterID: 51", "virtualRouterID: 0", "address: 10.77.0.12", "address: 10.77.0.100").Replace(string(exampleFile(t)))
	if err := os.WriteFile(f, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "validate", "--config", f)
	if code != ExitUsage {
		t.Fatalf("exit %d, want %d", code, ExitUsage)
	}
	// The errors name the lines the example holds those fields on.
	lineOf := func(field string) int {
		for i, l := range strings.Split(bad, "\n") {
			if strings.HasPrefix(strings.TrimPrefix(strings.TrimSpace(l), "- "), field) {
				return i + 1
			}
		}
		t.Fatalf("example has no line %q", field)
		return 0
	}
	for _, want := range []string{
		fmt.Sprintf("%s:%d: vip.virtualRouterID: 0 is out of range 1..255", f, lineOf("virtualRouterID: 0")),
		fmt.Sprintf("%s:%d: nodes[1].address: 10.77.0.100 is the VIP", f, lineOf("address: 10.77.0.100")),
		"2 problem(s) found",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	code, out, _ := run(t, "-o", "json", "validate", "--config", f)
	var res validateResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != ExitUsage || res.Valid || len(res.Errors) != 2 || res.Errors[0].Line != lineOf("virtualRouterID: 0") {
		t.Fatalf("json validate: exit %d, %+v (%v)", code, res, err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--output", "yaml", "version"},
		{"--no-such-flag"},
		{"init", "--node", "cp1"},
		{"validate", "--config", ""},
	} {
		if code, _, stderr := run(t, args...); code != ExitUsage || !strings.HasPrefix(stderr, "haplane: ") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and a message", args, code, stderr, ExitUsage)
		}
	}
}

func TestCompletion(t *testing.T) {
	code, out, _ := run(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "haplane") {
		t.Fatalf("completion bash: exit %d", code)
	}
}

func exampleFile(t *testing.T) []byte {
	t.Helper()
	code, out, stderr := run(t, "init", "--out", "-")
	if code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	return []byte(out)
}
