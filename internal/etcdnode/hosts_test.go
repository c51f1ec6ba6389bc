package etcdnode

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/netns"
)

// Separate hosts. When root, a must-show test runs its members as separate
// hosts: a bridge in a namespace of its own, one namespace per member (eth0
// at hostAddr(i), etcd's default ports, the metrics listener on the
// member's own 127.0.0.1:2381 as kubeadm has it) and one for the test's
// clients. The test process itself stays on the host, where nothing of the
// lab is reachable; it runs the test function again inside the client
// namespace (hostsEnv names the lab), and that run starts each member with
// `ip netns exec` in its own namespace. No interface of the host namespace
// takes part, so every packet stays between namespaces the test made.

// hostsEnv, set in the client namespace's run, is the lab's prefix.
const hostsEnv = "HAPLANE_ETCDNODE_HOSTS"

// hostsNet is this package's /24 inside its lab namespaces (10.77.57.0/24
// is used nowhere else in the repository).
const hostsNet = "10.77.57."

func hostAddr(i int) string { return hostsNet + strconv.Itoa(11+i) }

const hostsClientAddr = hostsNet + "100"

var labSeq atomic.Int64

// asHosts makes the calling test run with n members as separate hosts
// when it can. It returns true in the test process on the host, after the
// whole test ran in the client namespace (and failed t if that run
// failed): the caller returns at once. It returns false where the caller
// goes on with the test body: inside the client namespace, or without
// root, on 127.0.5.x.
func asHosts(t *testing.T, n int) bool {
	t.Helper()
	if os.Getenv(hostsEnv) != "" {
		return false
	}
	if err := netns.RequireRoot(); err != nil {
		t.Logf("members on %sx of the host's loopback, not separate hosts: %v", testNet, err)
		return false
	}
	prefix := fmt.Sprintf("hen%d-%d", os.Getpid(), labSeq.Add(1))
	ln, err := netns.NewNet(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sweepLab(t, prefix) })
	for i := range n {
		if _, err := ln.AddHost(fmt.Sprintf("m%d", i), mustAddr(hostAddr(i)), 24); err != nil {
			t.Fatal(err)
		}
	}
	c, err := ln.AddHost("c", mustAddr(hostsClientAddr), 24)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-test.run=^" + t.Name() + "$", "-test.count=1", "-test.v"}
	if dl, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(dl).Round(time.Second).String())
	}
	cmd := c.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), hostsEnv+"="+prefix)
	w := &prefixWriter{t: t, prefix: "hosts"}
	cmd.Stdout, cmd.Stderr = w, w
	t.Logf("running %s with %d members as separate hosts on %s0/24 (lab %s)", t.Name(), n, hostsNet, prefix)
	start := time.Now()
	err = cmd.Run()
	if err != nil {
		t.Fatalf("%s as separate hosts failed after %v: %v", t.Name(), time.Since(start).Round(time.Millisecond), err)
	}
	// The run in the client namespace ended with PASS, and said so.
	if !strings.Contains(w.all(), "--- PASS: "+t.Name()) {
		t.Fatalf("%s as separate hosts: no PASS line in its output", t.Name())
	}
	return true
}

// sweepLab kills what still runs in the lab's namespaces (only processes
// this test started live there), by PID, then deletes the namespaces.
func sweepLab(t testing.TB, prefix string) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix+"-") {
			continue
		}
		pids, _ := exec.Command("ip", "netns", "pids", f[0]).Output()
		for _, p := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 {
				t.Logf("lab %s: killing leftover process %d", f[0], pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if err := netns.Sweep(prefix); err != nil {
		t.Errorf("delete lab namespaces: %v", err)
	}
}

// hostNS is the namespace of member name in the lab of this run, or "".
func hostNS(name string) string {
	if p := os.Getenv(hostsEnv); p != "" {
		return p + "-" + name
	}
	return ""
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
