package elect

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// startAPIServer runs the real kube-apiserver (from HAPLANE_K8S_BIN, built
// by tools/k8s/build.sh) on 127.0.0.1 over an in-process etcd, with a
// static admin token, and returns a client.
func startAPIServer(t *testing.T) kubernetes.Interface {
	t.Helper()
	bin := os.Getenv("HAPLANE_K8S_BIN")
	if bin == "" {
		t.Skip("HAPLANE_K8S_BIN is not set: build kube-apiserver with tools/k8s/build.sh and point HAPLANE_K8S_BIN at its folder to test the Kubernetes Lease backend")
	}
	_, etcdURL := startEtcd(t)
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600))
	must(os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	must(os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte("test-token,admin,admin,system:masters\n"), 0o600))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--service-cluster-ip-range=10.96.0.0/12",
		"--authorization-mode=AlwaysAllow",
		// A loopback advertise address is refused by the default endpoint
		// reconciler; this apiserver serves no Service traffic anyway.
		"--endpoint-reconciler-type=none",
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
	)
	logf, _ := os.Create(filepath.Join(dir, "apiserver.log"))
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
	cfg := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", port), BearerToken: "test-token",
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, Timeout: 5 * time.Second}
	cs, err := kubernetes.NewForConfig(cfg)
	must(err)
	deadline := time.Now().Add(90 * time.Second)
	for {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err == nil && string(body) == "ok" {
			return cs
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "apiserver.log"))
			t.Fatalf("kube-apiserver not ready after 90s: %v\n%s", err, log)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestKubernetesLease: two candidates on a Lease of a real kube-apiserver;
// exactly one leads at a time, the other takes over when the first gives
// up, and the token (leaseTransitions) grows.
func TestKubernetesLease(t *testing.T) {
	cs := startAPIServer(t)
	var leading atomic.Int32
	var mu sync.Mutex
	var terms []Term
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := LeadKubernetes(context.Background(), KubeConfig{Client: cs, Lock: "haplane-test", Identity: id,
				LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond},
				func(ctx context.Context, term Term) error {
					if n := leading.Add(1); n != 1 {
						t.Errorf("%d leaders at once", n)
					}
					mu.Lock()
					terms = append(terms, term)
					mu.Unlock()
					time.Sleep(500 * time.Millisecond)
					leading.Add(-1)
					return nil
				})
			if err != nil {
				t.Errorf("%s: %v", id, err)
			}
		}()
	}
	wg.Wait()
	if len(terms) != 2 || terms[0].Identity == terms[1].Identity || terms[1].Token <= terms[0].Token {
		t.Fatalf("terms %+v: want two leaders in turn with a growing token", terms)
	}
	lease, err := cs.CoordinationV1().Leases("kube-system").Get(context.Background(), "haplane-test", metav1GetOptions())
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.LeaseTransitions == nil || int64(*lease.Spec.LeaseTransitions) < terms[1].Token {
		t.Errorf("lease transitions %v, want ≥ %d", lease.Spec.LeaseTransitions, terms[1].Token)
	}
}

func metav1GetOptions() metav1.GetOptions { return metav1.GetOptions{} }
