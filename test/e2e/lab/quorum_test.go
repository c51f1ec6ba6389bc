package lab

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestLabSurvivesEtcdQuorumLoss runs etcd as separate processes, kills two
// of the three members, and checks that the VIP and the load balancer keep
// serving: the VIP stays where it was and /livez answers through it without
// a single failure. (/readyz fails, as a real kube-apiserver's does without
// etcd; the load balancer then forwards to every backend rather than none.)
func TestLabSurvivesEtcdQuorumLoss(t *testing.T) {
	e := newLabEnv(t, "hpq")
	bin, dir, prefix, hp := e.bin, e.dir, e.prefix, e.hp
	t.Cleanup(func() {
		if _, err := hp("lab", "down", "--dir", dir); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	var st labState
	v := e.up(t, &st, "--backend", "stub", "--separate-etcd")
	// status --all from cp2 asks every node's agent over the network.
	allOut, err := exec.Command("ip", "netns", "exec", prefix+"-cp2", bin, "-o", "json", "status", "--all",
		"--config", filepath.Join(dir, "haplane.yaml"), "--pki-dir", filepath.Join(dir, "hosts", "cp2", "pki")).Output()
	var all view
	if err != nil || json.Unmarshal(allOut, &all) != nil || all.VIPOwner != "cp1" || len(all.Hosts) != 3 {
		t.Fatalf("status --all: %v %s", err, allOut)
	}
	for _, h := range all.Hosts {
		if h.Agent != "up" || h.Backends != "3/3" {
			t.Errorf("status --all: %+v", h)
		}
	}
	ca := filepath.Join(dir, "hosts", "cp1", "pki", "ca.crt")
	watch := exec.Command("ip", "netns", "exec", prefix+"-client", bin, "-o", "json", "lab", "watch",
		"--url", v.Endpoint+"/livez", "--ca", ca, "--every", "10ms", "--for", "5s")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	killed := 0
	for _, p := range st.Procs {
		if p.Name == "etcd" && (p.Host == "cp2" || p.Host == "cp3") {
			if err := syscall.Kill(-p.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 2 {
		t.Fatalf("killed %d etcd members, want 2", killed)
	}
	var r watchResult
	if err := json.NewDecoder(stdout).Decode(&r); err != nil {
		t.Fatal(err)
	}
	_ = watch.Wait()
	t.Logf("etcd quorum lost: %d requests to /livez through the VIP, %d failed, longest gap %s", r.Requests, r.Failed, r.MaxGap.Round(time.Millisecond))
	if r.Requests < 100 || r.Failed != 0 || r.MaxGap > 500*time.Millisecond {
		t.Errorf("the VIP and load balancer stopped serving without etcd: %+v", r)
	}
	out, err := hp("lab", "status", "--dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	var after view
	if err := json.Unmarshal(out, &after); err != nil || after.VIPOwner != "cp1" {
		t.Errorf("after losing etcd quorum: holder %q, want cp1 still (%v)", after.VIPOwner, err)
	}
}
