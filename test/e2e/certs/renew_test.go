package certs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/testutil/testbuf"
)

// The agent makes no network traffic here: no VIP, no load balancer, no
// etcd, no join server; it only reads and writes its certificate folder
// and serves its local API on loopback.
const clusterFile = `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: renew
controlPlaneEndpoint:
  vip: 10.77.61.100
vip:
  interface: eth0
  virtualRouterID: 61
nodes:
  - name: cp1
    address: 10.77.61.11
  - name: cp2
    address: 10.77.61.12
certificates:
  validity: 2m
  renewBefore: 115s
  renewCheckInterval: %s
  keyAlgorithm: ecdsa-p256
`

// bin is the haplane binary TestMain builds once for every test.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "haplane-e2e-certs")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "haplane")
	if out, err := exec.Command("go", "build", "-o", bin, "../../../cmd/haplane").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestAgentRenewsCertificates: certificates issued for 2 minutes are
// renewed by a running agent about 5 seconds later; the metrics say so,
// the old files are kept as .bak, the keys are untouched, and SIGTERM
// stops the agent cleanly.
func TestAgentRenewsCertificates(t *testing.T) {
	dir := t.TempDir()
	cf := filepath.Join(dir, "haplane.yaml")
	if err := os.WriteFile(cf, fmt.Appendf(nil, clusterFile, "2s"), 0o644); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(dir, "hosts")
	if out, err := exec.Command(bin, "pki", "generate", "--config", cf, "--out", hosts).CombinedOutput(); err != nil {
		t.Fatalf("pki generate: %v\n%s", err, out)
	}
	pkiDir := filepath.Join(hosts, "cp2", "pki")
	before, err := os.ReadFile(filepath.Join(pkiDir, "apiserver.crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyBefore, _ := os.ReadFile(filepath.Join(pkiDir, "apiserver.key"))

	api := freePort(t)
	logs := &testbuf.Buffer{} // the agent's output, read while the process writes it
	// cp2: rank 1, so it renews one interval (2s) after entering the window.
	cmd := exec.Command(bin, "--log-format", "json", "agent", "--config", cf, "--node", "cp2", "--pki-dir", pkiDir,
		"--no-vip", "--no-lb", "--no-etcd", "--join-addr", "-", "--api-addr", api, "--state-dir", filepath.Join(dir, "state"), "--nice", "0")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	metric := func(name string) (float64, bool) {
		resp, err := http.Get("http://" + api + "/metrics")
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var v float64
			if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
				if _, err := fmt.Sscan(rest, &v); err == nil {
					return v, true
				}
			}
		}
		return 0, false
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		if v, ok := metric(`haplane_cert_renewals_total{cert="apiserver",result="ok"}`); ok && v >= 1 {
			break
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("agent exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal after 45s\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if left, ok := metric(`haplane_cert_expiry_seconds{cert="scheduler.conf"}`); !ok || left < 100 {
		t.Errorf("scheduler.conf expiry after the renewal: %v s (found %v)", left, ok)
	}
	if days, ok := metric(`haplane_cert_expiry_days{cert="apiserver"}`); !ok || days <= 0 || days > 1 {
		t.Errorf("apiserver days left: %v (found %v)", days, ok)
	}
	bak, err := os.ReadFile(filepath.Join(pkiDir, "apiserver.crt.bak"))
	if err != nil || !bytes.Equal(bak, before) {
		t.Errorf("apiserver.crt.bak is not the old certificate (%v)", err)
	}
	if now, _ := os.ReadFile(filepath.Join(pkiDir, "apiserver.crt")); bytes.Equal(now, before) {
		t.Error("apiserver.crt unchanged")
	}
	if k, _ := os.ReadFile(filepath.Join(pkiDir, "apiserver.key")); !bytes.Equal(k, keyBefore) {
		t.Error("apiserver.key changed")
	}
	if _, err := os.Stat(filepath.Join(hosts, "cp2", "controller-manager.conf.bak")); err != nil {
		t.Errorf("no controller-manager.conf.bak: %v", err)
	}
	// Not under kubelet here: the restart is reported, not failed.
	if v, _ := metric("haplane_cert_renewal_failing"); v != 0 {
		t.Errorf("haplane_cert_renewal_failing = %v\n%s", v, logs.String())
	}
	if !strings.Contains(logs.String(), "kube-controller-manager") {
		t.Errorf("the log does not say kube-controller-manager needs a restart")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("agent exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent still running 20s after SIGTERM")
	}
}

// TestCheckIntervalRefused: a check interval longer than half the renewal
// window is refused with one line naming file, line and field, exit code
// 2, before anything starts.
func TestCheckIntervalRefused(t *testing.T) {
	dir := t.TempDir()
	cf := filepath.Join(dir, "haplane.yaml")
	if err := os.WriteFile(cf, fmt.Appendf(nil, clusterFile, "1m"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "agent", "--config", cf, "--node", "cp1", "--pki-dir", filepath.Join(dir, "none"),
		"--no-vip", "--no-lb", "--no-etcd", "--join-addr", "-", "--api-addr", "-", "--state-dir", filepath.Join(dir, "state"), "--nice", "0")
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want code 2\n%s", err, stderr.String())
	}
	// One line for the problem, then the CLI's count of problems.
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "haplane.yaml:17: certificates.renewCheckInterval: 1m0s is more than half of renewBefore (1m55s): a leaf could expire between two checks") ||
		!strings.HasSuffix(lines[1], "1 problem(s) found") {
		t.Errorf("stderr %q, want one line naming the file, line and field, and the count", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Errorf("a refused start created its state folder (%v)", err)
	}
}
