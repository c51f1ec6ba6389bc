// Package kubeapi runs a real kube-apiserver for tests: the binary from a
// folder built by tools/k8s/build.sh (the test passes it, by convention
// from BinEnv) on 127.0.0.1, over an in-process etcd, with a static admin
// token and AlwaysAllow. Only tests import it; it reads no environment.
package kubeapi

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Server is a running kube-apiserver.
type Server struct {
	// Config reaches it as a cluster admin (TLS not verified: its
	// serving certificate is self-signed by the apiserver).
	Config *rest.Config
	Client kubernetes.Interface
	// Addr is its host:port on 127.0.0.1.
	Addr string
}

// BinEnv names the environment variable that tests read for the folder of
// Kubernetes binaries (.ci/run sets it from tools/k8s/build.sh).
const BinEnv = "HAPLANE_K8S_BIN"

// Start runs the kube-apiserver in folder bin until the test ends, or
// skips the test with the reason when bin is empty. extraArgs are appended
// to its command line.
func Start(t testing.TB, bin string, extraArgs ...string) *Server {
	t.Helper()
	if bin == "" {
		t.Skip(BinEnv + " is not set: build kube-apiserver with tools/k8s/build.sh and point " + BinEnv + " at its folder")
	}
	etcdURL := startEtcd(t)
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	must(err)
	must(os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600))
	must(os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	must(os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte("test-token,admin,admin,system:masters\n"), 0o600))
	port := freePort(t)
	args := append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--service-cluster-ip-range=10.96.0.0/12",
		"--authorization-mode=AlwaysAllow",
		// A loopback advertise address is refused by the default endpoint
		// reconciler; tests that need the kubernetes Service's endpoints
		// write them.
		"--endpoint-reconciler-type=none",
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
	}, extraArgs...)
	cmd := exec.Command(filepath.Join(bin, "kube-apiserver"), args...)
	logf, err := os.Create(filepath.Join(dir, "apiserver.log"))
	must(err)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := &rest.Config{Host: "https://" + addr, BearerToken: "test-token",
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, Timeout: 5 * time.Second}
	cs, err := kubernetes.NewForConfig(cfg)
	must(err)
	deadline := time.Now().Add(90 * time.Second)
	for {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err == nil && string(body) == "ok" {
			return &Server{Config: cfg, Client: cs, Addr: addr}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "apiserver.log"))
			t.Fatalf("kube-apiserver not ready after 90s: %v\n%s", err, log)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startEtcd runs a one-member etcd on loopback until the test ends and
// returns its client URL. The ports are picked free and then bound by
// etcd: another package's test may take one in between, so a bind failure
// picks new ones (a few times).
func startEtcd(t testing.TB) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cfg := embed.NewConfig()
		cfg.Dir = t.TempDir()
		cfg.LogLevel = "error"
		cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
		pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.InitialCluster = cfg.Name + "=" + pu.String()
		e, err := embed.StartEtcd(cfg)
		if err == nil {
			t.Cleanup(e.Close)
			<-e.Server.ReadyNotify()
			return cu.String()
		}
		inUse := errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
		if !inUse || attempt == 5 {
			t.Fatal(err)
		}
	}
}
