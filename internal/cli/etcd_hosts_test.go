package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/lab"
	"github.com/haplane/haplane/internal/pki"
	"github.com/haplane/haplane/internal/testutil/testproc"
)

// cliChildEnv makes the test binary run `haplane ARGS...` (ARGS as JSON)
// and exit with its status: how a test runs the real commands as
// processes, each inside a network namespace of its own.
const cliChildEnv = "HAPLANE_CLI_CHILD_ARGS"

func TestMain(m *testing.M) {
	if spec := os.Getenv(cliChildEnv); spec != "" {
		var args []string
		if err := json.Unmarshal([]byte(spec), &args); err != nil {
			fmt.Fprintln(os.Stderr, "child: bad args:", err)
			os.Exit(2)
		}
		os.Exit(Run(context.Background(), args, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// etcdHostsNet is this test's /24 inside its lab namespaces (10.77.58.0/24
// is used nowhere else in the repository).
const etcdHostsNet = "10.77.58."

// etcdHosts is three control-plane hosts, each a network namespace on a
// bridge of its own namespace running `haplane etcd run`, and a client
// namespace where the test runs `haplane etcd ...` commands. The cluster
// file names the hosts' real addresses, as an operator's would.
type etcdHosts struct {
	t      *testing.T
	prefix string
	cfg    string // cluster file
	dir    string
	nodes  []config.Node
	client *lab.Host
	hosts  map[string]*lab.Host

	procs *testproc.Set // the members' `haplane etcd run`
}

func newEtcdHosts(t *testing.T) *etcdHosts {
	t.Helper()
	if err := lab.RequireRoot(); err != nil {
		// The cluster file refuses loopback addresses, so without
		// namespaces there is no address the commands could be given.
		t.Skipf("needs root for network namespaces (the cluster file takes no loopback address): %v", err)
	}
	h := &etcdHosts{t: t, prefix: fmt.Sprintf("hec%d", os.Getpid()), dir: t.TempDir(),
		hosts: map[string]*lab.Host{}}
	for i := range 3 {
		h.nodes = append(h.nodes, config.Node{Name: fmt.Sprintf("cp%d", i+1), Address: etcdHostsNet + strconv.Itoa(11+i)})
	}
	example := strings.Replace(string(config.Example(config.ExampleOptions{VIP: etcdHostsNet + "100", Nodes: h.nodes})),
		"keyAlgorithm: rsa2048", "keyAlgorithm: ecdsa-p256", 1)
	h.cfg = filepath.Join(h.dir, "haplane.yaml")
	if err := os.WriteFile(h.cfg, []byte(example), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	files, _, err := pki.Generate(pkiPlan(c), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.WriteTree(filepath.Join(h.dir, "hosts"), files); err != nil {
		t.Fatal(err)
	}

	ln, err := lab.NewNet(h.prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.close)
	// After close, so that the members are stopped (by PID) before their
	// namespaces go.
	h.procs = testproc.New(t)
	for _, n := range h.nodes {
		host, err := ln.AddHost(n.Name, netip.MustParseAddr(n.Address), 24)
		if err != nil {
			t.Fatal(err)
		}
		h.hosts[n.Name] = host
	}
	if h.client, err = ln.AddHost("c", netip.MustParseAddr(etcdHostsNet+"100"), 24); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *etcdHosts) pkiDir(node string) string { return filepath.Join(h.dir, "hosts", node, "pki") }

// command is `haplane ARGS...` as a process inside the host's namespace.
func (h *etcdHosts) command(host *lab.Host, args ...string) *exec.Cmd {
	spec, err := json.Marshal(args)
	if err != nil {
		h.t.Fatal(err)
	}
	// ip netns exec execs the binary: the command's PID is haplane's.
	cmd := host.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), cliChildEnv+"="+string(spec))
	return cmd
}

// start runs `haplane etcd run` on the named hosts.
func (h *etcdHosts) start(names ...string) {
	h.t.Helper()
	for _, n := range names {
		cmd := h.command(h.hosts[n], "etcd", "run", "--config", h.cfg, "--node", n,
			"--pki-dir", h.pkiDir(n), "--data-dir", filepath.Join(h.dir, "data", n))
		out, err := cmd.StderrPipe()
		if err != nil {
			h.t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			h.t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if line := sc.Text(); strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || strings.HasPrefix(line, "haplane:") {
					h.t.Logf("[%s] %s", n, line)
				}
			}
		}()
		h.procs.Add(n, cmd)
	}
}

// kill9 sends SIGKILL to the named host's member and reaps it.
func (h *etcdHosts) kill9(name string) { h.t.Helper(); h.procs.Kill9(name) }

// haplane runs `haplane ARGS...` in the client namespace, with cp1's PKI
// (its etcd health-check client certificate).
func (h *etcdHosts) haplane(args ...string) (code int, stdout, stderr string) {
	h.t.Helper()
	return h.haplaneOn(h.client, append(args, "--pki-dir", h.pkiDir("cp1"))...)
}

// haplaneOn runs `haplane ARGS... --config FILE` on host.
func (h *etcdHosts) haplaneOn(host *lab.Host, args ...string) (code int, stdout, stderr string) {
	h.t.Helper()
	args = append(args, "--config", h.cfg)
	cmd := h.command(host, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		h.t.Fatalf("haplane %v: no exit after 60s", args)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

func (h *etcdHosts) status() (int, etcdnode.Report, string) {
	h.t.Helper()
	code, out, stderr := h.haplane("--output", "json", "etcd", "status")
	var rep etcdnode.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		h.t.Fatalf("etcd status (exit %d): output is not a report: %v\n%s\n%s", code, err, out, stderr)
	}
	return code, rep, stderr
}

// waitFaultTolerant polls etcd status until it exits 0.
func (h *etcdHosts) waitFaultTolerant(timeout time.Duration) etcdnode.Report {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, rep, stderr := h.status()
		if code == 0 {
			return rep
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("etcd status: exit %d after %v: %s %+v", code, timeout, stderr, rep)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// stop sends SIGTERM to the named members (all when none is named) and
// waits for them to exit.
func (h *etcdHosts) stop(names ...string) { h.procs.Stop(names...) }

// close deletes the lab's namespaces; testproc stopped the members first.
func (h *etcdHosts) close() {
	if err := lab.Sweep(h.prefix); err != nil {
		h.t.Errorf("delete lab namespaces: %v", err)
	}
}

// TestEtcdStatusAndRemoveOnHosts runs `haplane etcd run` on three hosts
// (network namespaces) and drives `haplane etcd status --output json` and
// `haplane etcd remove` from a fourth: exit 0 with every member healthy;
// with one member killed, exit 1 (2 of 3 keep the quorum but no fault
// tolerance) and the dead member shown unreachable; removing a healthy
// member then is refused with the quorum arithmetic, and nothing is
// removed.
func TestEtcdStatusAndRemoveOnHosts(t *testing.T) {
	h := newEtcdHosts(t)
	start := time.Now()
	h.start("cp1", "cp2", "cp3")
	var rep etcdnode.Report
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, r, stderr := h.status()
		rep = r
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd status: exit %d after 90s: %s %+v", code, stderr, rep)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("3 members healthy by etcd status after %v", time.Since(start).Round(time.Millisecond))
	leader := ""
	for _, m := range rep.Members {
		if !m.Healthy || !m.Reachable || m.Learner || m.ReadLatency <= 0 {
			t.Errorf("member %s: %+v", m.Name, m)
		}
		if m.Leader {
			leader = m.Name
		}
	}
	if len(rep.Members) != 3 || rep.Verdict != etcdnode.VerdictHealthy || !rep.FaultTolerant || rep.FaultTolerance != 1 || leader == "" {
		t.Fatalf("healthy cluster: %d members verdict %s tolerant %v (%d) leader %q", len(rep.Members), rep.Verdict, rep.FaultTolerant, rep.FaultTolerance, leader)
	}

	// Kill a member that is not the leader, and one it is not the test's
	// remove target either.
	dead, target := "cp3", "cp2"
	if leader == "cp3" {
		dead = "cp1"
	}
	h.kill9(dead)
	code, rep, stderr := h.status()
	if code != ExitFailure {
		t.Fatalf("etcd status with %s dead: exit %d, want %d (no fault tolerance left)", dead, code, ExitFailure)
	}
	if rep.Verdict != etcdnode.VerdictNoFaultTolerance || rep.HealthyVoters != 2 || rep.Quorum != 2 || rep.FaultTolerance != 0 || rep.FaultTolerant {
		t.Fatalf("2 of 3: verdict %s healthy %d quorum %d tolerance %d", rep.Verdict, rep.HealthyVoters, rep.Quorum, rep.FaultTolerance)
	}
	for _, m := range rep.Members {
		if (m.Name == dead) == (m.Reachable || m.Healthy) {
			t.Errorf("member %s: reachable %v healthy %v", m.Name, m.Reachable, m.Healthy)
		}
	}
	if !strings.Contains(stderr, "no-fault-tolerance: 2 of 3 voting members healthy, quorum 2") {
		t.Errorf("status stderr does not say why it failed: %q", stderr)
	}

	code, out, stderr := h.haplane("etcd", "remove", target)
	if code != ExitFailure || !strings.Contains(stderr, "refusing to remove "+target) ||
		!strings.Contains(stderr, "2 of 3 voting members are healthy") || !strings.Contains(stderr, "would lose quorum") {
		t.Fatalf("etcd remove %s with %s dead: exit %d, stdout %q stderr %q; want a quorum refusal", target, dead, code, out, stderr)
	}
	t.Logf("refusal: %s", strings.TrimSpace(stderr))
	if _, rep, _ = h.status(); len(rep.Members) != 3 {
		t.Fatalf("after the refusal: %d members, want 3", len(rep.Members))
	}

	// The dead member restarts from its data dir: fault tolerant again.
	h.start(dead)
	deadline = time.Now().Add(60 * time.Second)
	for {
		code, rep, stderr = h.status()
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restarting %s: exit %d %s", dead, code, stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if rep.HealthyVoters != 3 {
		t.Fatalf("after restart: healthy %d", rep.HealthyVoters)
	}
}

// TestEtcdRestoreOnHosts: `haplane etcd snapshot save` from the client
// host, then `haplane etcd restore` on each member's own host. A restore
// while the member runs is refused; the first restore makes the new token
// and the others take it with --token; the cluster comes back fault
// tolerant as a new cluster (every member ID new, as the token is).
func TestEtcdRestoreOnHosts(t *testing.T) {
	h := newEtcdHosts(t)
	h.start("cp1", "cp2", "cp3")
	before := h.waitFaultTolerant(90 * time.Second)
	snap := filepath.Join(h.dir, "snap.db")
	if code, out, stderr := h.haplane("etcd", "snapshot", "save", snap); code != 0 {
		t.Fatalf("snapshot save: exit %d %s %s", code, out, stderr)
	}
	restore := func(node string, extra ...string) (int, map[string]any, string) {
		t.Helper()
		args := append([]string{"--output", "json", "etcd", "restore", snap, "--node", node,
			"--data-dir", filepath.Join(h.dir, "data", node)}, extra...)
		code, out, stderr := h.haplaneOn(h.hosts[node], args...)
		var res map[string]any
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("restore %s: %v: %s", node, err, out)
			}
		}
		return code, res, stderr
	}

	if code, _, stderr := restore("cp1"); code != ExitFailure || !strings.Contains(stderr, "stop etcd on this node first") {
		t.Fatalf("restore while cp1 runs: exit %d %q, want a refusal", code, stderr)
	}
	t0 := time.Now()
	h.stop()
	t.Logf("members stopped in %v", time.Since(t0).Round(time.Millisecond))
	code, first, stderr := restore("cp1")
	if code != 0 || first["newToken"] != true {
		t.Fatalf("restore cp1: exit %d %v %s", code, first, stderr)
	}
	token, _ := first["token"].(string)
	if !strings.HasPrefix(token, "lab-restore-") {
		t.Fatalf("token %q", token)
	}
	for _, n := range []string{"cp2", "cp3"} {
		code, res, stderr := restore(n, "--token", token)
		if code != 0 || res["token"] != token || res["newToken"] != false {
			t.Fatalf("restore %s: exit %d %v %s", n, code, res, stderr)
		}
	}
	t0 = time.Now()
	h.start("cp1", "cp2", "cp3")
	after := h.waitFaultTolerant(90 * time.Second)
	// About 10s of it is etcd's initial corruption check (kubeadm's
	// --feature-gates=InitialCorruptCheck=true): a restarting member asks
	// each peer for its hash in turn, and peers that start at the same
	// moment answer only after their own check, so the asks time out.
	t.Logf("restored cluster fault tolerant %v after the start", time.Since(t0).Round(time.Millisecond))
	old := map[string]string{}
	for _, m := range before.Members {
		old[m.Name] = m.ID
	}
	for _, m := range after.Members {
		if m.ID == "" || m.ID == old[m.Name] {
			t.Errorf("member %s kept its ID %s: not a new cluster", m.Name, m.ID)
		}
	}
}
