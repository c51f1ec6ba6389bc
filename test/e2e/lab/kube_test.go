package lab

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chaosReport is the part of `lab chaos --output json` the tests read.
type chaosReport struct {
	Scenarios []struct {
		Name     string `json:"name"`
		Target   string `json:"target"`
		Skipped  string `json:"skipped"`
		Pass     bool   `json:"pass"`
		Verdict  string `json:"verdict"`
		Observed struct {
			Requests int            `json:"requests"`
			Failed   int            `json:"failed"`
			MaxGap   time.Duration  `json:"maxGapNs"`
			Writes   int            `json:"writes"`
			Lost     int            `json:"lost"`
			Leases   map[string]any `json:"leases"`
		} `json:"observed"`
		VIPHolder []struct {
			Value string `json:"value"`
		} `json:"vipHolder"`
		LeaseTakeover map[string]time.Duration `json:"leaseTakeoverNs"`
	} `json:"scenarios"`
}

// TestKubeLabChaos brings the lab up with the real kube-apiserver,
// kube-controller-manager and kube-scheduler (v1.37.1, built by
// tools/k8s/build.sh), reaches them with kubectl through the VIP, runs
// three chaos scenarios (the VIP holder's agent killed, its API server
// killed, the scheduler leader killed) and checks what the client saw:
// short gaps, no acknowledged write lost, a new scheduler leader on its
// Lease. lab down must leave nothing behind.
func TestKubeLabChaos(t *testing.T) {
	k8s := os.Getenv("HAPLANE_K8S_BIN")
	if k8s == "" {
		t.Skip("skipping: HAPLANE_K8S_BIN is not set; build the Kubernetes binaries with tools/k8s/build.sh and point HAPLANE_K8S_BIN at its output folder")
	}
	e := newLabEnv(t, "hpk")
	dir, hp := e.dir, e.hp
	report := filepath.Join(t.TempDir(), "report")
	var st labState
	e.downOnCleanup(t, &st)
	e.up(t, &st, "--backend", "kube", "--k8s-bin", k8s)
	names, client := map[string]int{}, map[string]int{}
	for _, p := range st.Procs {
		if p.Host == "client" {
			client[p.Name]++
			continue
		}
		names[p.Name]++
	}
	for _, want := range []string{"etcd", "agent", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if names[want] != 3 {
			t.Errorf("lab runs %d %s, want one per control-plane host (%v)", names[want], want, names)
		}
	}
	// The client host is a worker: its agent is the node-local load
	// balancer, and nothing else runs there.
	if len(client) != 1 || client["agent"] != 1 {
		t.Errorf("the client host runs %v, want one agent (--role worker)", client)
	}

	// kubectl in the client host, through the VIP, as kubeadm's admin.
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := hp(append([]string{"lab", "kubectl", "--dir", dir}, args...)...)
		if err != nil {
			t.Fatalf("kubectl %v: %v %s", args, err, out)
		}
		return string(out)
	}
	if got := kubectl("get", "--raw", "/readyz"); got != "ok" {
		t.Fatalf("/readyz through the VIP: %q", got)
	}
	kubectl("create", "configmap", "before-chaos", "--from-literal=k=v")
	// Both leader Leases are held by one of the lab's hosts (each
	// component runs with its host's name).
	for _, lease := range []string{"kube-scheduler", "kube-controller-manager"} {
		// The Lease appears once a candidate has synced its caches and
		// acquired it: not found until then.
		for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(time.Second) {
			out, err := hp("lab", "kubectl", "--dir", dir, "get", "lease", "-n", "kube-system", lease, "-o", "jsonpath={.spec.holderIdentity}")
			h := string(out)
			if err == nil && strings.HasPrefix(h, "cp") && strings.Contains(h, "_") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("lease %s held by %q after 90s (%v)", lease, h, err)
			}
		}
	}

	out, err := hp("lab", "chaos", "--dir", dir, "--scenario", "vip-holder-kill,apiserver-kill,scheduler-leader-kill", "--report", report)
	var rep chaosReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		t.Fatalf("lab chaos: %v (%v)\n%s", err, jerr, out)
	}
	if err != nil {
		t.Errorf("lab chaos failed: %v", err)
	}
	if len(rep.Scenarios) != 3 {
		t.Fatalf("%d scenarios reported, want 3", len(rep.Scenarios))
	}
	for _, s := range rep.Scenarios {
		o := s.Observed
		t.Logf("%s (target %s): %d probes, %d failed, longest gap %s, %d writes, %d lost, lease takeover %v: %s",
			s.Name, s.Target, o.Requests, o.Failed, o.MaxGap.Round(time.Millisecond), o.Writes, o.Lost, s.LeaseTakeover, s.Verdict)
		if !s.Pass || s.Skipped != "" {
			t.Errorf("%s: %s %s", s.Name, s.Verdict, s.Skipped)
		}
		if o.Requests < 300 || o.Writes < 20 || o.Lost != 0 || o.MaxGap > time.Second {
			t.Errorf("%s: %d probes, %d writes, %d lost, longest gap %s; want ≥300 probes, ≥20 writes, none lost, gap ≤ 1s", s.Name, o.Requests, o.Writes, o.Lost, o.MaxGap)
		}
		if len(o.Leases) != 2 {
			t.Errorf("%s: leases followed %v, want the scheduler's and the controller-manager's", s.Name, o.Leases)
		}
	}
	if vh := rep.Scenarios[0].VIPHolder; len(vh) < 2 || vh[0].Value != "cp1" {
		t.Errorf("vip-holder-kill: VIP holder over time %v, want cp1 then another", vh)
	}
	if d := rep.Scenarios[2].LeaseTakeover["kube-scheduler"]; d <= 0 || d > 30*time.Second {
		t.Errorf("scheduler leader kill: new leader after %s, want within the lease (15s) plus a retry", d)
	}
	for _, f := range []string{"chaos.json", "chaos.html"} {
		data, err := os.ReadFile(filepath.Join(report, f))
		if err != nil || len(data) == 0 {
			t.Errorf("report %s: %v", f, err)
		}
		if f == "chaos.html" && strings.Count(string(data), "<svg") != 3 {
			t.Errorf("chaos.html holds %d timelines, want 3", strings.Count(string(data), "<svg"))
		}
	}
	// The object written before the faults is still there.
	if got := kubectl("get", "configmap", "before-chaos", "-o", "jsonpath={.data.k}"); got != "v" {
		t.Errorf("configmap written before the chaos reads %q", got)
	}
}
