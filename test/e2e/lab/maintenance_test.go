package lab

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// maintResult is the part of `haplane maintenance` JSON this test reads.
type maintResult struct {
	Node  string `json:"node"`
	OK    bool   `json:"ok"`
	Steps []struct {
		Name   string  `json:"name"`
		OK     bool    `json:"ok"`
		MS     float64 `json:"durationMs"`
		Detail string  `json:"detail"`
	} `json:"steps"`
}

// TestLabMaintenance: in a three-node lab (stub apiservers, etcd in the
// agents), `haplane maintenance start` on cp1, the VIP's holder, moves
// the VIP to another node and takes cp1's apiserver out of every load
// balancer's pool; on the etcd leader's node it moves the leadership
// away; stop brings each back (the VIP returns to cp1, the highest
// priority). Each start and stop reports every step ok.
func TestLabMaintenance(t *testing.T) {
	e := newLabEnv(t, "hpm")
	var st labFile
	e.downOnCleanup(t, &st.labState)
	e.up(t, &st, "--backend", "stub")
	sock := func(h string) string { return filepath.Join(e.dir, "hosts", h, "state", "agent.sock") }
	maint := func(h, action string) maintResult {
		t.Helper()
		args := []string{"maintenance", action, "--api-socket", sock(h)}
		if action == "start" {
			args = append(args, "--drain-timeout", "5s")
		}
		out, err := e.hp(args...)
		if err != nil {
			raw, _ := e.hp("status", "--raw", "--api-socket", sock(h))
			t.Fatalf("%v\n%s\n%s's status:\n%s", err, out, h, raw)
		}
		var r maintResult
		if err := json.Unmarshal(out, &r); err != nil || !r.OK {
			raw, _ := e.hp("status", "--raw", "--api-socket", sock(h))
			t.Fatalf("maintenance %s on %s: %v\n%s\n%s's status:\n%s", action, h, err, out, h, raw)
		}
		for _, s := range r.Steps {
			t.Logf("%s %s: %-16s ok=%v %6.0fms %s", h, action, s.Name, s.OK, s.MS, s.Detail)
		}
		return r
	}
	holder := func() string {
		out, err := e.hp("lab", "status", "--dir", e.dir)
		if err != nil {
			t.Fatal(err)
		}
		var v view
		_ = json.Unmarshal(out, &v)
		return v.VIPOwner
	}
	// inPool reports whether node's apiserver is in host's pool.
	inPool := func(host, node string) bool {
		t.Helper()
		out, err := e.hp("status", "--raw", "--api-socket", sock(host))
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Parts struct {
				LB struct {
					Backends []struct {
						Addr      string `json:"addr"`
						InService bool   `json:"inService"`
					} `json:"backends"`
				} `json:"lb"`
			} `json:"parts"`
		}
		_ = json.Unmarshal(out, &s)
		addr := map[string]string{"cp1": "10.77.0.11:", "cp2": "10.77.0.12:", "cp3": "10.77.0.13:"}[node]
		for _, b := range s.Parts.LB.Backends {
			if strings.HasPrefix(b.Addr, addr) && b.InService {
				return true
			}
		}
		return false
	}
	ns := map[string]string{}
	for _, h := range st.Hosts {
		ns[h.Name] = h.NS
	}
	etcdLeader := func() string {
		t.Helper()
		out, err := exec.Command("ip", "netns", "exec", ns["cp1"], e.bin, "--output", "json", "etcd", "status",
			"--config", st.ClusterFile, "--pki-dir", filepath.Join(e.dir, "hosts", "cp1", "pki")).Output()
		var r struct {
			Members []struct {
				Name   string `json:"name"`
				Leader bool   `json:"leader"`
			} `json:"members"`
		}
		if json.Unmarshal(out, &r) != nil {
			t.Fatalf("etcd status: %v\n%s", err, out)
		}
		for _, m := range r.Members {
			if m.Leader {
				return m.Name
			}
		}
		return ""
	}
	waitFor := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, d)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// cp1 holds the VIP (lab up checked it).
	t0 := time.Now()
	maint("cp1", "start")
	t.Logf("start took %v", time.Since(t0).Round(time.Millisecond))
	if h := holder(); h == "cp1" || h == "" {
		t.Errorf("VIP holder %q after maintenance start on cp1", h)
	}
	for _, h := range []string{"cp1", "cp2", "cp3"} {
		if inPool(h, "cp1") {
			t.Errorf("cp1's apiserver still in %s's pool", h)
		}
	}
	if l := etcdLeader(); l == "cp1" || l == "" {
		t.Errorf("etcd leader %q during cp1's maintenance", l)
	}
	out, _ := e.hp("status", "--api-socket", sock("cp1"), "--config", "")
	if !strings.Contains(string(out), `"active": true`) {
		t.Errorf("cp1's status does not show maintenance:\n%s", out)
	}
	// Refused: a second node in maintenance would leave one etcd member
	// of three healthy (cp1's counts as gone). One line, exit code 2.
	msg, err := exec.Command(e.bin, "maintenance", "start", "--api-socket", sock("cp2")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || strings.Count(strings.TrimSpace(string(msg)), "\n") != 0 ||
		!strings.Contains(string(msg), "etcd would lose its quorum") {
		t.Errorf("second start: %v, want exit 2 with one line on etcd's quorum:\n%s", err, msg)
	} else {
		t.Logf("second start refused: %s", msg)
	}
	if h := holder(); h != "cp2" && h != "cp3" {
		t.Errorf("the refused start moved the VIP: holder %q", h)
	}

	maint("cp1", "stop")
	waitFor("VIP back on cp1", 5*time.Second, func() bool { return holder() == "cp1" })
	for _, h := range []string{"cp1", "cp2", "cp3"} {
		if !inPool(h, "cp1") {
			t.Errorf("cp1's apiserver not back in %s's pool", h)
		}
	}

	// The etcd leader's node: its leadership moves away.
	l := etcdLeader()
	r := maint(l, "start")
	for _, s := range r.Steps {
		if s.Name == "etcd-leader" && !strings.Contains(s.Detail, "leadership moved from "+l) {
			t.Errorf("etcd step on the leader %s: %s", l, s.Detail)
		}
	}
	if now := etcdLeader(); now == l || now == "" {
		t.Errorf("etcd leader %q after maintenance start on the leader %s", now, l)
	}
	maint(l, "stop")
	if _, err := os.Stat(sock("cp1")); err != nil {
		t.Error(err)
	}
}
