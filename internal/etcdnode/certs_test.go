package etcdnode

import (
	"crypto/x509"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/pki"
)

// testPKI writes a kubeadm-shaped etcd PKI under dir with internal/pki (the
// same issuing code `haplane pki generate` uses): etcd/ca.crt, per member
// etcd/<name>/server|peer.crt|key, and the health-check client pair.
// ECDSA P-256 keeps the tests fast.
type testPKI struct {
	dir    string
	ca     pki.KeyPair
	CAFile string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	key, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA(pki.CASpec{Name: pki.EtcdCA, CN: "etcd-ca"}, key, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, ca: pki.KeyPair{Cert: ca, Key: key}, CAFile: filepath.Join(dir, "etcd", "ca.crt")}
	writeFile(t, p.CAFile, pki.CertPEM(ca))
	return p
}

// issue writes base.crt/base.key signed by the etcd CA.
func (p *testPKI) issue(t testing.TB, base, cn string, usages []x509.ExtKeyUsage, ips ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	spec := pki.LeafSpec{Name: base, CA: pki.EtcdCA, CN: cn, DNS: []string{"localhost", cn}, Usages: usages}
	for _, ip := range ips {
		spec.IPs = append(spec.IPs, netip.MustParseAddr(ip))
	}
	cert, err := pki.Sign(spec, key.Public(), p.ca, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, base+".crt"), filepath.Join(p.dir, base+".key")
	writeFile(t, certFile, pki.CertPEM(cert))
	writeFile(t, keyFile, kp)
	return certFile, keyFile
}

var bothUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}

// member issues a member's server and peer certificates (both usages, as
// kubeadm's etcd/server and etcd/peer).
func (p *testPKI) member(t testing.TB, name, ip string) TLSFiles {
	c, k := p.issue(t, "etcd/"+name+"/server", name, bothUsages, ip, "127.0.0.1", "::1")
	pc, pk := p.issue(t, "etcd/"+name+"/peer", name, bothUsages, ip, "127.0.0.1", "::1")
	return TLSFiles{CertFile: c, KeyFile: k, PeerCertFile: pc, PeerKeyFile: pk, CAFile: p.CAFile}
}

// client issues kubeadm's etcd health-check client certificate.
func (p *testPKI) client(t testing.TB) ClientTLS {
	c, k := p.issue(t, "etcd/healthcheck-client", "kube-etcd-healthcheck-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	return ClientTLS{CertFile: c, KeyFile: k, CAFile: p.CAFile}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
