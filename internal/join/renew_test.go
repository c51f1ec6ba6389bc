package join

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// caRenewer renews what ca signed, while valid, for a node whose name is
// the certificate's CN: the checks the agent's pki-backed renewer makes,
// on a smaller plan. lifetime is the renewed validity.
type caRenewer struct {
	ca       *testCA
	lifetime time.Duration
	// forKey, when set, signs for that key instead: a server gone bad.
	forKey any
}

func (r caRenewer) Renew(node, name string, old *x509.Certificate) ([]byte, error) {
	if err := old.CheckSignatureFrom(r.ca.cert); err != nil {
		return nil, errors.New("not signed by this cluster's CA")
	}
	if time.Now().After(old.NotAfter) {
		return nil, errors.New("expired: an expired certificate proves nothing; re-join the node")
	}
	if old.Subject.CommonName != node {
		return nil, fmt.Errorf("names %q, not %s", old.Subject.CommonName, node)
	}
	pub := old.PublicKey
	if r.forKey != nil {
		pub = r.forKey
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: old.Subject, DNSNames: old.DNSNames,
		IPAddresses: old.IPAddresses, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(r.lifetime),
		KeyUsage: old.KeyUsage, ExtKeyUsage: old.ExtKeyUsage}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.ca.cert, pub, r.ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// held is a certificate of node cp4 (CN cp4, its address) with its key.
func held(t *testing.T, ca *testCA, notAfter time.Time) RenewInput {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "cp4"}, DNSNames: []string{"cp4", "localhost"},
		IPAddresses: []net.IP{net.ParseIP("10.77.0.14")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return RenewInput{Cert: c, Key: key, Issuer: ca.cert}
}

// TestRenewOverTLS: a node proves it holds a certificate and gets it
// renewed, same key and names, later expiry, over real TLS to a server it
// authenticates with the cluster CA.
func TestRenewOverTLS(t *testing.T) {
	ca := newCA(t, "kubernetes")
	h := startServer(t, ca)
	h.srv.Renewer = caRenewer{ca: ca, lifetime: 2 * time.Hour}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	in := held(t, ca, time.Now().Add(2*time.Minute))
	out, err := Renew(context.Background(), RenewOptions{Servers: []string{h.addr}, Roots: roots, Cluster: "lab", Node: "cp4",
		Certs: map[string]RenewInput{"etcd/peer": in}})
	if err != nil {
		t.Fatal(err)
	}
	c := out["etcd/peer"]
	if c == nil || !c.NotAfter.After(in.Cert.NotAfter.Add(time.Hour)) {
		t.Fatalf("renewed %v", c)
	}
	if !c.PublicKey.(*ecdsa.PublicKey).Equal(in.Key.Public()) {
		t.Error("renewed for another key")
	}
}

func TestRenewRefusals(t *testing.T) {
	ca := newCA(t, "kubernetes")
	other := newCA(t, "kubernetes") // same name, another key: an impostor CA
	h := startServer(t, ca)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(other.cert)
	good := held(t, ca, time.Now().Add(2*time.Minute))
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name    string
		renewer Renewer
		roots   *x509.CertPool
		cluster string
		node    string
		in      RenewInput
		want    string
	}{
		{"a stolen certificate without its key", caRenewer{ca: ca, lifetime: time.Hour}, roots, "lab", "cp4",
			RenewInput{Cert: good.Cert, Key: stranger, Issuer: ca.cert}, "not signed by the certificate's key"},
		{"a certificate another CA signed", caRenewer{ca: ca, lifetime: time.Hour}, roots, "lab", "cp4",
			held(t, other, time.Now().Add(time.Hour)), "not signed by this cluster's CA"},
		{"an expired certificate", caRenewer{ca: ca, lifetime: time.Hour}, roots, "lab", "cp4",
			held(t, ca, time.Now().Add(-time.Second)), "expired"},
		{"another node's name", caRenewer{ca: ca, lifetime: time.Hour}, roots, "lab", "cp5", good, `names "cp4", not cp5`},
		{"another cluster", caRenewer{ca: ca, lifetime: time.Hour}, roots, "prod", "cp4", good, `belongs to cluster "lab"`},
		{"a server this node cannot authenticate", caRenewer{ca: ca, lifetime: time.Hour}, otherRoots, "lab", "cp4", good, "certificate"},
		{"a server answering for another key", caRenewer{ca: ca, lifetime: time.Hour, forKey: &stranger.PublicKey}, roots, "lab", "cp4", good, "not for this node's key"},
		{"a server answering with a shorter certificate", caRenewer{ca: ca, lifetime: time.Minute}, roots, "lab", "cp4", good, "no later than the old one"},
		{"no renewer", nil, roots, "lab", "cp4", good, "renews no certificates"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.srv.Renewer = tc.renewer
			out, err := Renew(context.Background(), RenewOptions{Servers: []string{h.addr}, Roots: tc.roots, Cluster: tc.cluster, Node: tc.node,
				Certs: map[string]RenewInput{"etcd/peer": tc.in}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Renew = %v, %v; want an error saying %q", out, err, tc.want)
			}
			if out != nil {
				t.Errorf("a refusal returned certificates")
			}
		})
	}
}

// TestRenewTriesTheNextServer: a server that refuses (it holds no CA key,
// say) is passed over for the next one.
func TestRenewTriesTheNextServer(t *testing.T) {
	ca := newCA(t, "kubernetes")
	bad, good := startServer(t, ca), startServer(t, ca)
	good.srv.Renewer = caRenewer{ca: ca, lifetime: time.Hour}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	out, err := Renew(context.Background(), RenewOptions{Servers: []string{bad.addr, good.addr}, Roots: roots, Node: "cp4",
		Certs: map[string]RenewInput{"etcd/peer": held(t, ca, time.Now().Add(time.Minute))}})
	if err != nil || out["etcd/peer"] == nil {
		t.Fatalf("Renew = %v, %v", out, err)
	}
}
