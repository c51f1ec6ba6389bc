package etcdnode

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haplane/haplane/internal/testutil/testproc"
)

// childEnv carries NodeOptions (JSON) to a re-executed test binary that
// runs one member as its own process, so a test can kill -9 it.
const childEnv = "HAPLANE_ETCDNODE_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// runChild is the member process: Enter, print READY, run until SIGTERM.
func runChild(spec string) int {
	var o NodeOptions
	if err := json.Unmarshal([]byte(spec), &o); err != nil {
		fmt.Fprintln(os.Stderr, "child: bad spec:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, _, err := Enter(ctx, o, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Println("READY")
	select {
	case <-ctx.Done():
	case <-m.Done():
	}
	m.Stop()
	return 0
}

// Test members live on 127.0.5.x (this package's loopback /24), or, for
// the tests that call asHosts, on separate hosts (hosts_test.go).
const testNet = "127.0.5."

// freePort returns a port that is free on ip now and that no other
// process is handed out later by the kernel.
//
// A member's ports are picked here, released, and bound again by the
// member (a child process) later; in a recovery test they stay unbound
// for seconds while a member is down. A port from the ephemeral range
// (bind to port 0, or a client's source port) could be taken in that
// window by any test on the machine: a listener on the wildcard address
// then answers for 127.0.5.x too. CI saw exactly that: m2's join was sent
// to a member's client port held by another package's HTTP server ("200
// (OK); malformed header: missing HTTP content-type"). So the ports come
// from below the ephemeral range, which the kernel never hands out, and
// which no test in this repository binds by number. A port this process
// picked before is never returned twice (a member's client and peer port
// must differ, and so must two clusters' ports).
func freePort(t testing.TB, ip string) int {
	t.Helper()
	pickedMu.Lock()
	defer pickedMu.Unlock()
	lo, hi := fixedPortRange(t)
	n := hi - lo
	// Start at a place that depends on the process, so two test binaries
	// of this package (go test -count, a developer's and CI's run) do not
	// walk the range in step.
	start := (os.Getpid()*7919 + len(picked)) % n
	for i := range n {
		port := lo + (start+i)%n
		if picked[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			continue // held by someone, on ip or on the wildcard address
		}
		l.Close()
		picked[port] = true
		return port
	}
	t.Fatalf("no free port in %d-%d on %s", lo, hi-1, ip)
	return 0
}

// fixedPortRange is [20000, start of the kernel's ephemeral range).
func fixedPortRange(t testing.TB) (lo, hi int) {
	t.Helper()
	lo, hi = 20000, 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	var eLo, eHi int
	if _, err := fmt.Sscan(string(b), &eLo, &eHi); err != nil {
		t.Fatalf("ip_local_port_range %q: %v", b, err)
	}
	if eLo < hi {
		hi = eLo
	}
	if hi-lo < 1000 {
		t.Fatalf("ephemeral ports start at %d: too few fixed ports left for test members", eLo)
	}
	return lo, hi
}

var (
	pickedMu sync.Mutex
	picked   = map[int]bool{}
)

// testCluster is the desired member set and how to reach it.
type testCluster struct {
	t      testing.TB
	pki    *testPKI
	client ClientTLS
	token  string
	nodes  []NodeOptions // index i is member "m<i>"

	procs *testproc.Set // member processes
	mu    sync.Mutex    // protects mems
	mems  map[string]*Member
}

func newTestCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	tc := &testCluster{t: t, pki: newTestPKI(t), token: fmt.Sprintf("test-%d-%d", os.Getpid(), time.Now().UnixNano()),
		procs: testproc.New(t), mems: map[string]*Member{}}
	tc.client = tc.pki.client(t)
	var peers []Peer
	var targets []Target
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		var cfg Config
		if ns := hostNS(name); ns != "" {
			// A host of its own: etcd's and kubeadm's default ports.
			ip := hostAddr(i)
			cfg = Config{Address: ip, TLS: tc.pki.member(t, name, ip)}
		} else {
			ip := fmt.Sprintf("%s%d", testNet, i+1)
			cfg = Config{Address: ip, ClientPort: freePort(t, ip), PeerPort: freePort(t, ip),
				TLS:        tc.pki.member(t, name, ip),
				MetricsURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t, "127.0.0.1"))}
		}
		cfg.Name, cfg.DataDir, cfg.ClusterToken = name, filepath.Join(t.TempDir(), "etcd"), tc.token
		cfg.Heartbeat, cfg.ElectionTimeout = 50*time.Millisecond, 500*time.Millisecond
		cfg.LogLevel = "fatal"
		peers = append(peers, Peer{Name: name, PeerURL: cfg.PeerURL()})
		targets = append(targets, Target{Name: name, Endpoint: cfg.ClientURL()})
		tc.nodes = append(tc.nodes, NodeOptions{Member: cfg, Client: tc.client, ProbeTimeout: time.Second,
			PromoteInterval: 200 * time.Millisecond, StartTimeout: time.Minute})
	}
	for i := range tc.nodes {
		tc.nodes[i].Member.InitialCluster = peers
		tc.nodes[i].Targets = targets
	}
	t.Cleanup(tc.stopAll)
	return tc
}

func (tc *testCluster) node(name string) NodeOptions {
	for _, n := range tc.nodes {
		if n.Member.Name == name {
			return n
		}
	}
	tc.t.Fatalf("no node %s", name)
	return NodeOptions{}
}

func (tc *testCluster) endpoints() []string {
	var out []string
	for _, n := range tc.nodes {
		out = append(out, n.Member.ClientURL())
	}
	return out
}

// startInProcess enters the named members concurrently (a new cluster
// needs a quorum started before any is ready).
func (tc *testCluster) startInProcess(names ...string) {
	tc.t.Helper()
	if os.Getenv(hostsEnv) != "" {
		tc.t.Fatal("in-process members cannot be separate hosts: use startProcess")
	}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, _, err := Enter(context.Background(), tc.node(name), slog.New(slog.DiscardHandler))
			if err != nil {
				errs[i] = err
				return
			}
			tc.mu.Lock()
			tc.mems[name] = m
			tc.mu.Unlock()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			tc.t.Fatalf("start %s: %v", names[i], err)
		}
	}
}

// startThree runs a three-member cluster m0, m1, m2 as processes and
// waits until all three are healthy voters.
func startThree(t *testing.T) *testCluster {
	t.Helper()
	tc := newTestCluster(t, 3)
	tc.startProcess("m0", "m1", "m2")
	tc.waitHealthy(3, 30*time.Second)
	return tc
}

// rebuild enters member name in process again with an empty data folder,
// as a node rebuilt from scratch does, and returns it and the plan it
// followed.
func (tc *testCluster) rebuild(ctx context.Context, name string) (*Member, Plan) {
	tc.t.Helper()
	if err := os.RemoveAll(tc.node(name).Member.DataDir); err != nil {
		tc.t.Fatal(err)
	}
	m, plan, err := Enter(ctx, tc.node(name), nil)
	if err != nil {
		tc.t.Fatalf("rebuild %s: %v", name, err)
	}
	tc.mu.Lock()
	tc.mems[name] = m
	tc.mu.Unlock()
	return m, plan
}

func (tc *testCluster) stopInProcess(name string) {
	tc.mu.Lock()
	m := tc.mems[name]
	delete(tc.mems, name)
	tc.mu.Unlock()
	if m != nil {
		m.Stop()
	}
}

// startProcess runs the named members as child processes, concurrently,
// and waits for each to print READY.
func (tc *testCluster) startProcess(names ...string) {
	tc.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		spec, err := json.Marshal(tc.node(name))
		if err != nil {
			tc.t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		if ns := hostNS(name); ns != "" {
			// ip netns exec execs the binary: cmd's PID is the member's.
			cmd = exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
		}
		cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
		cmd.Stderr = &prefixWriter{t: tc.t, prefix: name}
		out, err := cmd.StdoutPipe()
		if err != nil {
			tc.t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			tc.t.Fatal(err)
		}
		tc.procs.Add(name, cmd)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(out)
				ok := false
				for sc.Scan() {
					if sc.Text() == "READY" {
						ok = true
						break
					}
				}
				ready <- ok
				for sc.Scan() {
				}
			}()
			select {
			case ok := <-ready:
				if !ok {
					errs[i] = fmt.Errorf("member %s exited before it was ready", name)
				}
			case <-time.After(90 * time.Second):
				errs[i] = fmt.Errorf("member %s not ready after 90s", name)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			tc.t.Fatal(err)
		}
	}
	if hostNS(names[0]) != "" {
		tc.checkSeparateHosts()
	}
}

// checkSeparateHosts fails the test unless every member process runs in a
// network namespace of its own, none of them the test's.
func (tc *testCluster) checkSeparateHosts() {
	tc.t.Helper()
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		tc.t.Fatal(err)
	}
	seen := map[string]string{self: "the test"}
	tc.procs.Each(func(name string, cmd *exec.Cmd) {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
		if err != nil {
			tc.t.Fatal(err)
		}
		if other, ok := seen[ns]; ok {
			tc.t.Fatalf("member %s shares network namespace %s with %s", name, ns, other)
		}
		seen[ns] = name
	})
}

// kill9 sends SIGKILL to the named member's process and reaps it.
func (tc *testCluster) kill9(name string) { tc.t.Helper(); tc.procs.Kill9(name) }

// stopProcess sends SIGTERM to the named member's process and waits for
// it to exit (a clean stop: the member flushes its WAL).
func (tc *testCluster) stopProcess(name string) { tc.t.Helper(); tc.procs.StopOne(name) }

func (tc *testCluster) stopAll() {
	tc.procs.Stop()
	tc.mu.Lock()
	mems := tc.mems
	tc.mems = map[string]*Member{}
	tc.mu.Unlock()
	for _, m := range mems {
		m.Stop()
	}
}

func (tc *testCluster) newClient(endpoints ...string) *clientv3.Client {
	tc.t.Helper()
	if len(endpoints) == 0 {
		endpoints = tc.endpoints()
	}
	cfg, err := tc.client.Config()
	if err != nil {
		tc.t.Fatal(err)
	}
	c, err := NewClient(endpoints, cfg, 2*time.Second)
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(func() { c.Close() })
	return c
}

func (tc *testCluster) prober(timeout time.Duration) *Prober {
	cfg, err := tc.client.Config()
	if err != nil {
		tc.t.Fatal(err)
	}
	p := NewProber(cfg, timeout, 0)
	tc.t.Cleanup(p.Close)
	return p
}

func (tc *testCluster) targets() []Target { return tc.nodes[0].Targets }

func (tc *testCluster) ops() *Ops {
	return &Ops{Client: tc.newClient(), Prober: tc.prober(time.Second), Targets: tc.targets()}
}

// waitFor polls cond every 100ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHealthy waits for the given number of healthy voting members and no
// learner left.
func (tc *testCluster) waitHealthy(voters int, timeout time.Duration) Report {
	tc.t.Helper()
	p := tc.prober(time.Second)
	var rep Report
	waitFor(tc.t, timeout, fmt.Sprintf("%d healthy voting members", voters), func() error {
		rep = p.Probe(context.Background(), tc.targets())
		learners := 0
		for _, m := range rep.Members {
			if m.Learner {
				learners++
			}
		}
		if rep.Voters != voters || rep.HealthyVoters != voters || learners != 0 {
			return fmt.Errorf("voters %d healthy %d learners %d: %+v", rep.Voters, rep.HealthyVoters, learners, rep.Members)
		}
		return nil
	})
	return rep
}

// prefixWriter sends a child's stderr to the test log, line by line.
type prefixWriter struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	buf    []byte
	log    strings.Builder // every line written
}

func (w *prefixWriter) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.String()
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		w.t.Logf("[%s] %s", w.prefix, w.buf[:i])
		w.log.Write(w.buf[:i+1])
		w.buf = w.buf[i+1:]
	}
}

func clientPrefix() []clientv3.OpOption { return []clientv3.OpOption{clientv3.WithPrefix()} }

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func listenTCP(ip string, port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
}
