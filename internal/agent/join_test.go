package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
)

// signerPlan is a three-node plan; the tree written from it holds every CA
// key in the first node's folder, as on the node that answers joins.
func signerPlan(t *testing.T) (*PKISigner, *pki.Plan) {
	t.Helper()
	p, root := testPKI(t, "10.77.0.100", "10.77.0.11", "10.77.0.12", "10.77.0.13")
	return &PKISigner{PKIDir: filepath.Join(root, "cp1", "pki"), Plan: func() (*pki.Plan, error) { return p, nil }}, p
}

// testPKI is shortPKI issued now for a year, renewed a month before expiry:
// a tree with nothing due.
func testPKI(t *testing.T, endpoint string, addrs ...string) (*pki.Plan, string) {
	t.Helper()
	return shortPKI(t, time.Now(), 365*24*time.Hour, 30*24*time.Hour, endpoint, addrs...)
}

func csrFor(t *testing.T, cn string, dns []string, ips ...string) *x509.CertificateRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}
	for _, a := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(a))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// TestPKISignerGivesOnlyTheNodesOwnNames: the agent's real signer signs a
// joiner's CSRs with exactly the names the cluster file gives that node,
// and refuses a CSR that asks for another node's name or address.
func TestPKISignerGivesOnlyTheNodesOwnNames(t *testing.T) {
	s, _ := signerPlan(t)

	out, err := s.Sign("cp3", map[string]*x509.CertificateRequest{
		"etcd/server": csrFor(t, "", nil),
		"apiserver":   csrFor(t, "kube-apiserver", nil, "10.77.0.13"),
		"unneeded":    csrFor(t, "", nil), // not a certificate of cp3's: ignored
	})
	if err != nil {
		t.Fatalf("cp3's own CSRs refused: %v", err)
	}
	if len(out) != 2 {
		t.Fatalf("signed %d certificates, want 2 (etcd/server, apiserver)", len(out))
	}
	block, _ := pem.Decode(out["etcd/server"])
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "cp3" || !slices.Contains(cert.DNSNames, "cp3") || slices.Contains(cert.DNSNames, "cp2") {
		t.Errorf("etcd/server for cp3: CN %q, DNS %v", cert.Subject.CommonName, cert.DNSNames)
	}
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Contains(ips, "10.77.0.13") || slices.Contains(ips, "10.77.0.12") {
		t.Errorf("etcd/server for cp3 has addresses %v", ips)
	}

	for _, tc := range []struct {
		name string
		node string
		csrs map[string]*x509.CertificateRequest
		want string
	}{
		{"another node's name as CN", "cp3", map[string]*x509.CertificateRequest{"etcd/server": csrFor(t, "cp2", nil)}, `"cp2"`},
		{"another node's DNS name", "cp3", map[string]*x509.CertificateRequest{"etcd/peer": csrFor(t, "", []string{"cp2"})}, `DNS name "cp2"`},
		{"another node's address", "cp3", map[string]*x509.CertificateRequest{"apiserver": csrFor(t, "", nil, "10.77.0.11")}, "10.77.0.11"},
		{"the VIP on an etcd certificate", "cp3", map[string]*x509.CertificateRequest{"etcd/server": csrFor(t, "", nil, "10.77.0.100")}, "10.77.0.100"},
		{"a node not in the cluster file", "cp9", map[string]*x509.CertificateRequest{"etcd/server": csrFor(t, "", nil)}, "not in the cluster file"},
		{"nothing the node needs", "cp3", map[string]*x509.CertificateRequest{"other": csrFor(t, "", nil)}, "no CSR names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := s.Sign(tc.node, tc.csrs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sign = %d certificates, %v; want an error naming %s", len(out), err, tc.want)
			}
			if out != nil {
				t.Errorf("a refused request still returned %d certificates", len(out))
			}
		})
	}
}

// TestExternalEtcdSharesTheClientPair: a control-plane node of the external
// topology holds no etcd CA key. It cannot sign a joiner's
// apiserver-etcd-client, so it shares its own pair (as kubeadm's
// certificate upload does) and still signs the rest; without the pair it
// refuses, naming the key it lacks.
func TestExternalEtcdSharesTheClientPair(t *testing.T) {
	s, _ := signerPlan(t)
	if err := os.Remove(filepath.Join(s.PKIDir, "etcd", "ca.key")); err != nil {
		t.Fatal(err)
	}
	csrs := func() map[string]*x509.CertificateRequest {
		return map[string]*x509.CertificateRequest{
			"apiserver":             csrFor(t, "kube-apiserver", nil, "10.77.0.13"),
			"apiserver-etcd-client": csrFor(t, "", nil),
		}
	}
	out, err := s.Sign("cp3", csrs())
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if _, ok := out["apiserver"]; !ok || len(out) != 1 {
		t.Fatalf("signed %v, want only apiserver", slices.Sorted(maps.Keys(out)))
	}
	keys, err := PKISecrets{PKIDir: s.PKIDir}.SharedKeys()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := keys["etcd/ca.key"]; ok {
		t.Error("shared keys hold an etcd CA key the node does not have")
	}
	for _, name := range []string{"apiserver-etcd-client.crt", "apiserver-etcd-client.key"} {
		want, _ := os.ReadFile(filepath.Join(s.PKIDir, name))
		if string(keys[name]) != string(want) {
			t.Errorf("shared %s is not the node's own file", name)
		}
	}

	// A joiner checks the shared pair before it writes anything.
	cas, err := PKISecrets{PKIDir: s.PKIDir}.CACerts()
	if err != nil {
		t.Fatal(err)
	}
	res := &join.Result{CACerts: cas, SharedKeys: keys}
	if err := checkSharedPairs(res); err != nil {
		t.Fatalf("the node's own pair refused: %v", err)
	}
	other, _ := os.ReadFile(filepath.Join(s.PKIDir, "apiserver.key"))
	res.SharedKeys = maps.Clone(keys)
	res.SharedKeys["apiserver-etcd-client.key"] = other
	if err := checkSharedPairs(res); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("a pair with another certificate's key: %v", err)
	}
	res.SharedKeys = keys
	res.CACerts = map[string][]byte{"ca.crt": cas["ca.crt"]}
	if err := checkSharedPairs(res); err == nil || !strings.Contains(err.Error(), "does not chain") {
		t.Errorf("a pair the sent CAs did not sign: %v", err)
	}

	for _, ext := range []string{".crt", ".key"} {
		if err := os.Remove(filepath.Join(s.PKIDir, "apiserver-etcd-client"+ext)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := s.Sign("cp3", csrs()); err == nil || !strings.Contains(err.Error(), "holds no etcd/ca key") {
		t.Fatalf("without the pair: Sign = %d certificates, %v; want the missing key named", len(out), err)
	}
}
