// Package testcerts makes throwaway certificates for tests: a CA and
// server or client leaves signed by it, with the SANs and key usages a
// TLS handshake checks, as tls.Certificates or written to a directory.
// Keys are ECDSA P-256 and certificates are valid from an hour ago for a
// day, so a test never waits on a clock. Only tests import it.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a self-signed certificate authority.
type CA struct {
	Cert *x509.Certificate
	// PEM is Cert, PEM-encoded, for a config file or a ca.crt.
	PEM []byte
	// Pool holds Cert alone: the roots of a client or a server that
	// verifies leaves of this CA.
	Pool *x509.CertPool
	key  *ecdsa.PrivateKey
}

// serial numbers the certificates of one test binary, so that no two
// share one (a verifier may cache by issuer and serial).
var serial atomic.Int64

// NewCA returns a CA named cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcerts: CA key: %v", err)
	}
	tmpl := template(cn)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testcerts: CA %s: %v", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcerts: parse CA %s: %v", cn, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, PEM: pemBlock("CERTIFICATE", der), Pool: pool, key: key}
}

// Server returns a server leaf named cn for the SANs: each one that parses
// as an IP address is an IP SAN, any other a DNS name.
func (ca *CA) Server(t testing.TB, cn string, sans ...string) tls.Certificate {
	t.Helper()
	return ca.leaf(t, cn, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, sans)
}

// Client returns a client leaf named cn (the identity a server reads).
func (ca *CA) Client(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	return ca.leaf(t, cn, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil)
}

// Peer returns a leaf for both ends of a connection, as etcd's peer
// certificates are.
func (ca *CA) Peer(t testing.TB, cn string, sans ...string) tls.Certificate {
	t.Helper()
	return ca.leaf(t, cn, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, sans)
}

func (ca *CA) leaf(t testing.TB, cn string, usage []x509.ExtKeyUsage, sans []string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcerts: key for %s: %v", cn, err)
	}
	tmpl := template(cn)
	tmpl.ExtKeyUsage, tmpl.KeyUsage = usage, x509.KeyUsageDigitalSignature
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testcerts: sign %s: %v", cn, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcerts: parse %s: %v", cn, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// ServerConfig is a server's tls.Config with cert; with clients set it
// asks for and verifies client certificates of this CA.
func (ca *CA) ServerConfig(cert tls.Certificate, clients bool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clients {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, ca.Pool
	}
	return cfg
}

// ClientConfig is a client's tls.Config that trusts this CA and, unless
// certs is empty, presents certs[0].
func (ca *CA) ClientConfig(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, Certificates: certs, MinVersion: tls.VersionTLS12}
}

// Write writes the CA to dir/ca.crt and cert to dir/name.crt and
// dir/name.key (PEM, the key as PKCS #8, mode 0600), and returns the three
// paths.
func (ca *CA) Write(t testing.TB, dir, name string, cert tls.Certificate) (caFile, certFile, keyFile string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatalf("testcerts: key of %s: %v", name, err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{caFile, ca.PEM, 0o644},
		{certFile, pemBlock("CERTIFICATE", cert.Certificate[0]), 0o644},
		{keyFile, pemBlock("PRIVATE KEY", keyDER), 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			t.Fatalf("testcerts: write %s: %v", f.path, err)
		}
	}
	return caFile, certFile, keyFile
}

func template(cn string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// Pair is a fresh CA and one server leaf it issued: what a test of a TLS
// client against one server needs (the server presents Server, the client
// trusts Pool).
type Pair struct {
	*CA
	Server tls.Certificate
}

// NewPair returns a CA of its own and a server leaf named cn for the SANs
// (as Server reads them).
func NewPair(t testing.TB, cn string, sans ...string) Pair {
	t.Helper()
	ca := NewCA(t, "test-ca")
	return Pair{CA: ca, Server: ca.Server(t, cn, sans...)}
}
