package lab

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLabJoinFourthNode adds a fourth control-plane host to a running lab
// the way an operator would: the node goes into the cluster file, a token is
// made on cp1, and the new host joins through the VIP with no key copied by
// hand. Its CA certificates are byte-identical to the cluster's, its leaves
// chain to them with its own name and address, a replayed token is refused,
// and its etcd member then joins the running cluster with them.
func TestLabJoinFourthNode(t *testing.T) {
	e := newLabEnv(t, "hpj")
	dir, prefix, run := e.dir, e.prefix, e.hpIn
	t.Cleanup(func() {
		if _, err := run("", "lab", "down", "--dir", dir); err != nil {
			t.Errorf("lab down: %v", err)
		}
		list, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(list), prefix+"-") {
			t.Errorf("namespaces left after lab down:\n%s", list)
		}
	})
	if _, err := run("", "lab", "up", "--dir", dir, "--prefix", prefix, "--backend", "stub"); err != nil {
		t.Fatal(err)
	}

	// The operator adds cp4 to the cluster file the agents read.
	cf := filepath.Join(dir, "haplane.yaml")
	data, err := os.ReadFile(cf)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), "    address: 10.77.0.13\n", "    address: 10.77.0.13\n  - name: cp4\n    address: 10.77.0.14\n", 1)
	if edited == string(data) {
		t.Fatal("could not add cp4 to the cluster file")
	}
	if err := os.WriteFile(cf, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}

	cp1PKI := filepath.Join(dir, "hosts", "cp1", "pki")
	out, err := run(prefix+"-cp1", "token", "create", "--config", cf, "--pki-dir", cp1PKI)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token, Server, CAHash, Command string }
	if err := json.Unmarshal(out, &tok); err != nil || !strings.HasPrefix(tok.Command, "haplane join --server 10.77.0.100:9445") {
		t.Fatalf("token create: %v %s", err, out)
	}
	if _, err := run("", "lab", "add-host", "--dir", dir, "cp4", "10.77.0.14"); err != nil {
		t.Fatal(err)
	}
	cp4Dir := filepath.Join(dir, "hosts", "cp4")
	joinArgs := []string{"join", "--server", tok.Server, "--token", tok.Token, "--ca-hash", tok.CAHash, "--node", "cp4",
		"--out", cp4Dir, "--config-out", filepath.Join(cp4Dir, "haplane.yaml")}
	// A wrong CA pin stops before the token is sent (the token stays good).
	bad := append([]string(nil), joinArgs...)
	bad[6] = "sha256:" + strings.Repeat("0", 64)
	if out, err := run(prefix+"-cp4", bad...); err == nil || !strings.Contains(err.Error(), "does not chain to the CA") {
		t.Fatalf("join with a wrong CA hash: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(cp4Dir, "pki")); err == nil {
		t.Fatal("a refused join wrote files")
	}
	if out, err := run(prefix+"-cp4", joinArgs...); err != nil {
		t.Fatalf("join: %v %s", err, out)
	}

	// Shared material is byte-identical to the cluster's.
	for _, f := range []string{"ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key", "sa.key", "sa.pub"} {
		a, _ := os.ReadFile(filepath.Join(cp1PKI, f))
		b, err := os.ReadFile(filepath.Join(cp4Dir, "pki", f))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from the cluster's (%v)", f, err)
		}
	}
	// Its leaves chain to the cluster CAs and carry its own name and address.
	pool := func(f string) *x509.CertPool {
		p := x509.NewCertPool()
		data, _ := os.ReadFile(filepath.Join(cp1PKI, f))
		p.AppendCertsFromPEM(data)
		return p
	}
	for _, c := range []struct{ file, ca, dns, ip string }{
		{"apiserver.crt", "ca.crt", "cp4", "10.77.0.14"},
		{"etcd/server.crt", "etcd/ca.crt", "cp4", "10.77.0.14"},
		{"etcd/peer.crt", "etcd/ca.crt", "cp4", "10.77.0.14"},
	} {
		data, err := os.ReadFile(filepath.Join(cp4Dir, "pki", c.file))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(data)
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(c.ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s does not chain: %v", c.file, err)
		}
		if err := cert.VerifyHostname(c.dns); err != nil {
			t.Errorf("%s: %v", c.file, err)
		}
		hasIP := false
		for _, ip := range cert.IPAddresses {
			hasIP = hasIP || ip.Equal(net.ParseIP(c.ip))
		}
		if !hasIP {
			t.Errorf("%s lacks %s: %v", c.file, c.ip, cert.IPAddresses)
		}
	}
	for _, f := range []string{"admin.conf", "kubeadm.yaml"} {
		if _, err := os.Stat(filepath.Join(cp4Dir, f)); err != nil {
			t.Errorf("%s not written: %v", f, err)
		}
	}
	// The token was single-use.
	again := append([]string(nil), joinArgs...)
	again[10] = filepath.Join(t.TempDir(), "again")
	if out, err := run(prefix+"-cp4", again...); err == nil || !strings.Contains(err.Error(), "invalid, expired or used token") {
		t.Fatalf("replayed token: %v %s", err, out)
	}

	// With those certificates, cp4's agent brings its etcd member into the
	// running cluster (as a learner, then promoted) and serves.
	if _, err := run("", "lab", "start", "--dir", dir, "cp4"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := run("", "lab", "status", "--dir", dir)
		var v view
		if err == nil && json.Unmarshal(out, &v) == nil {
			for _, h := range v.Hosts {
				if h.Host == "cp4" && h.Agent == "up" && strings.HasPrefix(h.Etcd, "ready") && h.State == "backup" {
					t.Logf("cp4 joined: %+v", h)
					goto joined
				}
			}
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(dir, "logs", "cp4-agent.log"))
			t.Fatalf("cp4 not serving 60s after start: %s\nagent log:\n%s", out, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
joined:
	// cp1's agent still balances over the three backends it started with;
	// SIGHUP makes it read the cluster file again and add cp4's apiserver,
	// in place.
	backendsOf := func(host string) string {
		out, err := run("", "lab", "status", "--dir", dir)
		var v view
		if err == nil && json.Unmarshal(out, &v) == nil {
			for _, h := range v.Hosts {
				if h.Host == host {
					return h.Backends
				}
			}
		}
		return ""
	}
	if b := backendsOf("cp1"); b != "3/3" {
		t.Fatalf("cp1's backends before SIGHUP: %q, want 3/3", b)
	}
	var st labState
	if data, err := os.ReadFile(filepath.Join(dir, "state.json")); err != nil || json.Unmarshal(data, &st) != nil {
		t.Fatalf("state: %v", err)
	}
	for _, p := range st.Procs {
		if p.Host == "cp1" && p.Name == "agent" {
			if err := syscall.Kill(-p.PID, syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
	}
	for deadline := time.Now().Add(15 * time.Second); backendsOf("cp1") != "4/4"; time.Sleep(300 * time.Millisecond) {
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(dir, "logs", "cp1-agent.log"))
			t.Fatalf("cp1's backends 15s after SIGHUP: %q, want 4/4\nagent log:\n%s", backendsOf("cp1"), logs)
		}
	}
	if logs, _ := os.ReadFile(filepath.Join(dir, "logs", "cp1-agent.log")); !strings.Contains(string(logs), "cluster file reloaded") {
		t.Error("cp1's agent did not log the reload")
	}
}
