package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/elect"
	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/pki"
	"github.com/haplane/haplane/internal/status"
)

// statusAgentDoc is an agent's /status document for the tests.
const statusAgentDoc = `{"agent":{"node":"cp1","cluster":"lab","version":"test"},"ready":true,"parts":{"vip":{"state":"master","priority":250,"since":"now"}}}`

// statusTestCluster loads init's cluster file (with ECDSA keys for speed)
// and moves its nodes, in memory, to netPrefix+1..3 on loopback with
// free etcd ports: the cluster file refuses loopback addresses, and
// in-process etcd members have nothing else to listen on. Each node's PKI
// is written under the returned folder (<dir>/<node>/pki) by the code of
// `haplane pki generate`.
func statusTestCluster(t *testing.T, netPrefix string) (*config.Cluster, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haplane.yaml")
	example := strings.Replace(string(exampleFile(t)), "keyAlgorithm: rsa2048", "keyAlgorithm: ecdsa-p256", 1)
	if err := os.WriteFile(cfg, []byte(example), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ips := []string{netPrefix + "1", netPrefix + "2", netPrefix + "3"}
	c.Etcd.ClientPort, c.Etcd.PeerPort = portFreeOn(t, ips), portFreeOn(t, ips)
	for i := range c.Nodes {
		c.Nodes[i].Address = ips[i]
	}
	files, _, err := pki.Generate(pkiPlan(c), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(dir, "hosts")
	if _, err := pki.WriteTree(hosts, files); err != nil {
		t.Fatal(err)
	}
	return c, hosts
}

// portFreeOn returns a TCP port free on every address (all loopback), or
// skips the test when those addresses are not usable.
func portFreeOn(t *testing.T, ips []string) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Skipf("loopback address %s is not usable here: %v", ips[0], err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		ln.Close()
		if ok {
			return port
		}
	}
	t.Skipf("no port free on all of %v", ips)
	return 0
}

// startStatusEtcd runs every node's etcd member in-process, as the agent
// runs it (agent.EtcdNodeOptions), with fast raft timers.
func startStatusEtcd(t *testing.T, c *config.Cluster, hosts string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes {
		opts, err := agent.EtcdNodeOptions(c, n.Name, filepath.Join(hosts, n.Name, "pki"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		opts.Member.MetricsURL = "none"
		opts.Member.Heartbeat, opts.Member.ElectionTimeout = 50*time.Millisecond, 500*time.Millisecond
		opts.Member.LogLevel = "fatal"
		opts.StartTimeout = 30 * time.Second
		wg.Go(func() {
			m, _, err := etcdnode.Enter(context.Background(), opts, slog.New(slog.DiscardHandler))
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", n.Name, err)
				return
			}
			t.Cleanup(m.Stop)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// fakeLeaseAPI serves the kube-scheduler Lease (held by cp2) and no
// kube-controller-manager Lease; it returns a kubeconfig for it.
func fakeLeaseAPI(t *testing.T, renewed time.Time) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
			return
		}
		holder, duration, transitions := "cp2_0e1f", int32(15), int32(3)
		renew := metav1.NewMicroTime(renewed)
		json.NewEncoder(w).Encode(coordinationv1.Lease{
			TypeMeta:   metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"},
			ObjectMeta: metav1.ObjectMeta{Name: "kube-scheduler", Namespace: "kube-system"},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &duration,
				LeaseTransitions: &transitions, RenewTime: &renew},
		})
	}))
	t.Cleanup(srv.Close)
	return writeKubeconfig(t, srv.URL)
}

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.conf")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: test}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, server)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// blackhole accepts TCP connections on addr and never answers: a member
// (or API server) that hangs.
func blackhole(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// showStatusJSON runs status's code path after the agent answered: the
// sections, then the JSON output, decoded.
func showStatusJSON(t *testing.T, c *config.Cluster, why, pkiDir, kubeconfig string) status.View {
	t.Helper()
	var out bytes.Buffer
	a := &app{stdout: &out, stderr: io.Discard, output: "json"}
	if err := a.showStatus(context.Background(), []byte(statusAgentDoc), c, why, pkiDir, kubeconfig); err != nil {
		t.Fatal(err)
	}
	var v status.View
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	return v
}

func leaders(ms []etcdnode.MemberStatus) []string {
	var out []string
	for _, m := range ms {
		if m.Leader {
			out = append(out, m.Name)
		}
	}
	return out
}

func findElection(v *status.Elections, name string) (status.Election, bool) {
	for _, e := range v.Holders {
		if e.Name == name {
			return e, true
		}
	}
	return status.Election{}, false
}

// TestStatusShowsEtcdMembersAndElections runs a real three-member etcd
// cluster with the PKI haplane generates, one haplane elect lock held in it
// and a fake API server with the kube-scheduler Lease: status lists every
// member with exactly one leader, and the holders of the Leases and the
// lock, in JSON, text and with --all.
func TestStatusShowsEtcdMembersAndElections(t *testing.T) {
	c, hosts := statusTestCluster(t, "127.0.6.")
	pkiDir := filepath.Join(hosts, "cp1", "pki")
	startStatusEtcd(t, c, hosts)

	// A candidate of `haplane elect` holds lock "backup".
	tc, err := (&etcdFlags{pkiDir: pkiDir}).clientTLS(c).Config()
	if err != nil {
		t.Fatal(err)
	}
	_, targets := etcdnode.ClusterPeers(c)
	var eps []string
	for _, tg := range targets {
		eps = append(eps, tg.Endpoint)
	}
	cli, err := etcdnode.NewClient(eps, tc, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, stop := context.WithCancel(context.Background())
	leading, done := make(chan elect.Term, 1), make(chan error, 1)
	go func() {
		done <- elect.Lead(ctx, elect.Config{Client: cli, Lock: "backup", Identity: "cp3/4242", TTL: 5 * time.Second},
			func(lctx context.Context, term elect.Term) error {
				leading <- term
				<-lctx.Done()
				return nil
			})
	}()
	t.Cleanup(func() { stop(); <-done })
	var term elect.Term
	select {
	case term = <-leading:
	case err := <-done:
		t.Fatalf("elect: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the candidate never led")
	}

	renewed := time.Now().Add(-time.Second).Truncate(time.Microsecond)
	kubeconfig := fakeLeaseAPI(t, renewed)

	// The members just started: wait for every one to be healthy.
	var v status.View
	for deadline := time.Now().Add(10 * time.Second); ; {
		v = showStatusJSON(t, c, "", pkiDir, kubeconfig)
		if v.Etcd.Report != nil && v.Etcd.HealthyVoters == 3 && len(leaders(v.Etcd.Members)) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd section never healthy with one leader: %+v %+v", v.Etcd, v.Etcd.Report)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(v.Etcd.Members) != 3 || v.Etcd.Verdict != etcdnode.VerdictHealthy || v.Etcd.Skipped != "" {
		t.Fatalf("etcd section: %+v", v.Etcd.Report)
	}
	// In the member list's order: match them by name.
	for _, n := range c.Nodes {
		i := slices.IndexFunc(v.Etcd.Members, func(m etcdnode.MemberStatus) bool { return m.Name == n.Name })
		if i < 0 {
			t.Errorf("member %s missing", n.Name)
			continue
		}
		if m := v.Etcd.Members[i]; m.Endpoint != etcdnode.ClientURLFor(n.Address, c.Etcd.ClientPort) ||
			!m.Healthy || !m.Reachable || m.Learner || m.RaftTerm == 0 || m.RaftIndex == 0 || m.DBSize == 0 {
			t.Errorf("member %s: %+v", n.Name, m)
		}
	}
	if l := leaders(v.Etcd.Members); v.Etcd.Leader != l[0] {
		t.Errorf("etcd.leader = %q, the leader member is %s", v.Etcd.Leader, l[0])
	}
	if len(v.Certificates) == 0 {
		t.Error("the certificates section went missing")
	}

	el := v.Elections
	if len(el.Notes) != 0 || len(el.Holders) != 3 {
		t.Fatalf("elections: %+v", el)
	}
	if e, _ := findElection(el, "kube-system/kube-scheduler"); e.Backend != "kubernetes" || e.Holder != "cp2_0e1f" || e.Token != 3 ||
		e.Renewed == nil || !e.Renewed.Equal(renewed) || e.Expired || e.Error != "" {
		t.Errorf("kube-scheduler Lease: %+v", e)
	}
	if e, _ := findElection(el, "kube-system/kube-controller-manager"); e.Holder != "" || e.Error != "no such Lease" {
		t.Errorf("kube-controller-manager Lease: %+v", e)
	}
	if e, _ := findElection(el, "backup"); e.Backend != "etcd" || e.Holder != "cp3/4242" || e.Token != term.Token || e.Candidates != 1 {
		t.Errorf("etcd lock backup: %+v (term %+v)", e, term)
	}

	// The text screen: the agent's part, then the new tables.
	var out bytes.Buffer
	a := &app{stdout: &out, stderr: io.Discard, output: "text"}
	if err := a.showStatus(context.Background(), []byte(statusAgentDoc), c, "", pkiDir, kubeconfig); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"VIP:  master, priority 250", "certificates:", "ETCD MEMBERS (leader ", "NAME", "DB SIZE",
		"ELECTIONS", "kube-system/kube-scheduler", "cp2_0e1f", "no such Lease", "backup", "cp3/4242"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, out.String())
		}
	}

	// --all: no agent answers on the nodes' peer ports, the cluster-wide
	// sections are there all the same.
	out.Reset()
	a = &app{stdout: &out, stderr: io.Discard, output: "json"}
	if err := a.statusAll(context.Background(), c, pkiDir, kubeconfig); err != nil {
		t.Fatal(err)
	}
	var all statusAllView
	if err := json.Unmarshal(out.Bytes(), &all); err != nil {
		t.Fatal(err)
	}
	if len(all.Hosts) != 3 || all.Hosts[0].Agent != "down" || all.Etcd == nil || all.Etcd.Report == nil ||
		len(all.Etcd.Members) != 3 || len(leaders(all.Etcd.Members)) != 1 || all.Elections == nil || len(all.Elections.Holders) != 3 {
		t.Fatalf("status --all: %s", out.String())
	}
}

// TestStatusEtcdUnreachableReturnsFast: with two members hanging (they
// accept TCP and never speak TLS), one refusing, and an API server that
// hangs, status returns within the section timeout with every member
// unreachable and no leader. (Only loopback: a "nobody routes" address
// would send packets off this machine.)
func TestStatusEtcdUnreachableReturnsFast(t *testing.T) {
	c, hosts := statusTestCluster(t, "127.0.7.")
	blackhole(t, fmt.Sprintf("%s:%d", c.Nodes[0].Address, c.Etcd.ClientPort))
	blackhole(t, fmt.Sprintf("%s:%d", c.Nodes[2].Address, c.Etcd.ClientPort))
	kubeconfig := writeKubeconfig(t, "https://"+blackhole(t, "127.0.0.1:0"))

	start := time.Now()
	v := showStatusJSON(t, c, "", filepath.Join(hosts, "cp1", "pki"), kubeconfig)
	// The sections run in parallel, each bounded by status.Timeout (2s);
	// the bound leaves room for a loaded CI machine, and still fails a
	// status that waits on a hung member (a client's own timeouts are
	// much longer).
	if took := time.Since(start); took > 3*status.Timeout {
		t.Errorf("status took %s with etcd down; want at most %s", took, 3*status.Timeout)
	}
	if v.Etcd.Report == nil || len(v.Etcd.Members) != 3 {
		t.Fatalf("etcd section: %+v", v.Etcd)
	}
	for _, m := range v.Etcd.Members {
		if m.Reachable || m.Healthy || m.Leader || m.Error == "" {
			t.Errorf("member %s: %+v; want unreachable with an error", m.Name, m)
		}
	}
	if v.Etcd.Leader != "" || v.Etcd.Verdict != etcdnode.VerdictNoQuorum {
		t.Errorf("leader %q, verdict %s", v.Etcd.Leader, v.Etcd.Verdict)
	}
	// Both Leases fail, and so does the listing of the etcd locks.
	el := v.Elections
	if len(el.Holders) != 2 || el.Holders[0].Error == "" || el.Holders[1].Error == "" ||
		len(el.Notes) != 1 || !strings.HasPrefix(el.Notes[0], "etcd locks: ") {
		t.Errorf("elections: %+v", el)
	}

	var out bytes.Buffer
	if err := status.WriteClusterSections(&out, v.Etcd, v.Elections); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "unreachable") < 3 || !strings.Contains(out.String(), "ETCD MEMBERS (leader none; no-quorum") {
		t.Errorf("text:\n%s", out.String())
	}
}

// statusChildEnv marks the child of TestStatusCommandClusterSections that
// runs in a network namespace of its own.
const statusChildEnv = "HAPLANE_STATUS_TEST_CHILD"

// TestStatusCommandClusterSections runs the command itself: without a
// cluster file the sections are skipped with one line each; with one
// whose members are down it still answers fast, exit 0.
func TestStatusCommandClusterSections(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, statusAgentDoc)
	}))
	defer srv.Close()
	api := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")

	code, stdout, stderr := run(t, "-o", "json", "status", "--api-addr", api, "--config", missing, "--pki-dir", "", "--kubeconfig", filepath.Join(dir, "admin.conf"))
	var v status.View
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("exit %d, %v: %s %s", code, err, stdout, stderr)
	}
	if v.Etcd == nil || v.Etcd.Report != nil || v.Etcd.Skipped != "no cluster file "+missing+" (--config)" {
		t.Errorf("etcd: %+v", v.Etcd)
	}
	if v.Elections == nil || len(v.Elections.Holders) != 0 || len(v.Elections.Notes) != 2 ||
		!strings.HasPrefix(v.Elections.Notes[0], "kubernetes leases: skipped: no kubeconfig") ||
		!strings.HasPrefix(v.Elections.Notes[1], "etcd locks: skipped: no cluster file") {
		t.Errorf("elections: %+v", v.Elections)
	}
	code, stdout, _ = run(t, "status", "--api-addr", api, "--config", missing, "--pki-dir", "", "--kubeconfig", "")
	if code != 0 || !strings.Contains(stdout, "ETCD MEMBERS: skipped: no cluster file") ||
		!strings.Contains(stdout, "kubernetes leases: skipped: no --kubeconfig") {
		t.Errorf("text: exit %d\n%s", code, stdout)
	}

	// A cluster file whose members are on TEST-NET-1. Its packets must not
	// leave this machine, so that part runs in a child of this test in a
	// network namespace of its own with only loopback up: no member
	// answers, every connect fails at once.
	if os.Getenv(statusChildEnv) == "" {
		if os.Geteuid() != 0 {
			t.Log("skipping the part with a cluster file: it needs root for a private network namespace")
			return
		}
		cmd := exec.Command("unshare", "--net", "--", "sh", "-c", `ip link set lo up && exec "$0" "$@"`,
			os.Args[0], "-test.run=^TestStatusCommandClusterSections$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), statusChildEnv+"=1")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "--- PASS: TestStatusCommandClusterSections") {
			t.Fatalf("child in a private network namespace: %v\n%s", err, out)
		}
		return
	}
	cfg := filepath.Join(dir, "haplane.yaml")
	example := strings.NewReplacer("10.77.0.", "192.0.2.", "keyAlgorithm: rsa2048", "keyAlgorithm: ecdsa-p256").Replace(string(exampleFile(t)))
	if err := os.WriteFile(cfg, []byte(example), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run(t, "pki", "generate", "--config", cfg, "--out", filepath.Join(dir, "hosts")); code != 0 {
		t.Fatalf("pki generate: %s", stderr)
	}
	start := time.Now()
	code, stdout, stderr = run(t, "-o", "json", "status", "--api-addr", api, "--config", cfg,
		"--pki-dir", filepath.Join(dir, "hosts", "cp1", "pki"), "--kubeconfig", "")
	took := time.Since(start)
	v = status.View{}
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("exit %d, %v: %s %s", code, err, stdout, stderr)
	}
	if took > 3*status.Timeout {
		t.Errorf("status took %s", took)
	}
	if v.Etcd.Report == nil || len(v.Etcd.Members) != 3 || v.Etcd.Members[0].Reachable || v.Etcd.Members[0].Endpoint != "https://192.0.2.11:2379" {
		t.Errorf("etcd: %s", stdout)
	}
}

func TestPrintRenewal(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		st   agent.CertsStatus
		want string
	}{
		{"nothing yet", agent.CertsStatus{NextDue: now.Add(72 * time.Hour)},
			"renewal: by the agent, next due Jan 05 03:04 UTC (in 3d); last renewal never\n"},
		{"renewed, restart pending, failing", agent.CertsStatus{NextDue: now.Add(-time.Minute), LastRenewal: now.Add(-time.Hour),
			Renewed: []string{"apiserver", "scheduler.conf"}, PendingRestarts: []string{"kube-scheduler"}, LastError: "certs: no peer"},
			"renewal: by the agent, next due Jan 02 03:03 UTC (now); last renewal Jan 02 02:04 UTC (apiserver, scheduler.conf)\n" +
				"  restart needed: kube-scheduler read their renewed certificate at start only\n" +
				"  last check failed: certs: no peer\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			status.WriteRenewal(&b, &tc.st, now)
			if b.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tc.want)
			}
		})
	}
}
