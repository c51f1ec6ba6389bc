package testcerts

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"strings"
	"testing"
)

// TestHandshake runs a mutual-TLS handshake on loopback with a server and
// a client leaf of one CA, and checks that a leaf of another CA and a
// name outside the server's SANs are refused.
func TestHandshake(t *testing.T) {
	ca := NewCA(t, "test-ca")
	srv := ca.Server(t, "backend", "backend", "127.0.0.1")
	if got := srv.Leaf.DNSNames; len(got) != 1 || got[0] != "backend" || len(srv.Leaf.IPAddresses) != 1 {
		t.Fatalf("SANs: DNS %v IP %v, want backend and 127.0.0.1", got, srv.Leaf.IPAddresses)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig(srv, true))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if tc := c.(*tls.Conn); tc.Handshake() == nil {
					_, _ = io.WriteString(c, tc.ConnectionState().PeerCertificates[0].Subject.CommonName)
				}
			}()
		}
	}()
	dial := func(cfg *tls.Config) (string, error) {
		c, err := tls.Dial("tcp", l.Addr().String(), cfg)
		if err != nil {
			return "", err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		return string(b), err
	}
	if got, err := dial(ca.ClientConfig(ca.Client(t, "admin"))); err != nil || got != "admin" {
		t.Fatalf("client of the CA: %q, %v; want the server to read admin", got, err)
	}
	other := NewCA(t, "other-ca")
	if got, err := dial(ca.ClientConfig(other.Client(t, "intruder"))); err == nil && got != "" {
		t.Fatalf("a client of another CA was accepted as %q", got)
	}
	cfg := ca.ClientConfig(ca.Client(t, "admin"))
	cfg.ServerName = "elsewhere"
	if _, err := dial(cfg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a name outside the SANs: %v, want a certificate error", err)
	}
}

func TestWrite(t *testing.T) {
	ca := NewCA(t, "test-ca")
	dir := t.TempDir()
	caFile, certFile, keyFile := ca.Write(t, dir, "server", ca.Peer(t, "m0", "127.0.0.1", "m0"))
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("load the written pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "m0",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the written leaf does not verify against the written CA: %v", err)
	}
	if !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("IP SAN %v", leaf.IPAddresses)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v, want 0600", st.Mode(), err)
	}
}
