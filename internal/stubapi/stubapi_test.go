package stubapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/testutil/testetcd"
)

func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

func client(pool *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func do(t *testing.T, c *http.Client, method, u, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStubInMemory(t *testing.T) {
	tc, pool := selfSigned(t)
	s, err := Start(Config{Addr: "127.0.0.1:0", TLS: tc, Name: "cp1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := client(pool)
	base := "https://" + s.Addr()
	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		if code, body := do(t, c, "GET", base+p, ""); code != 200 || body != "ok" {
			t.Errorf("%s = %d %q", p, code, body)
		}
	}
	if code, _ := do(t, c, "POST", base+"/stub/objects/a", "hello"); code != 201 {
		t.Fatalf("POST = %d", code)
	}
	if code, body := do(t, c, "GET", base+"/stub/objects/a", ""); code != 200 || body != "hello" {
		t.Fatalf("GET = %d %q", code, body)
	}
	if code, _ := do(t, c, "GET", base+"/stub/objects/missing", ""); code != 404 {
		t.Fatalf("GET missing = %d", code)
	}
}

// TestStubFollowsEtcd: with a real etcd behind it, writes land in etcd and
// readiness fails once etcd is gone, as the real apiserver's does.
func TestStubFollowsEtcd(t *testing.T) {
	member := testetcd.Start(t, nil)
	cli := member.Client(t)

	tc, pool := selfSigned(t)
	s, err := Start(Config{Addr: "127.0.0.1:0", TLS: tc, Name: "cp1", KV: EtcdKV{Client: cli}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := client(pool)
	base := "https://" + s.Addr()
	if code, _ := do(t, c, "POST", base+"/stub/objects/x", "v1"); code != 201 {
		t.Fatalf("POST = %d", code)
	}
	resp, err := cli.Get(context.Background(), prefix+"x")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("etcd holds %v (%v)", resp, err)
	}
	member.Close()
	if code, _ := do(t, c, "GET", base+"/readyz", ""); code != 500 {
		t.Fatalf("/readyz with etcd down = %d, want 500", code)
	}
	if code, _ := do(t, c, "POST", base+"/stub/objects/y", "v2"); code != 503 {
		t.Fatalf("POST with etcd down = %d, want 503", code)
	}
}
