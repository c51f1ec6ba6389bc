package etcdnode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestClientCertAuthEnforced dials a real member's client and peer ports
// with no client certificate, with one of another CA, and with the right
// one. Only the last gets an answer: the TLS handshake or the first
// request (HTTPS on both ports, gRPC on the client port) fails otherwise.
func TestClientCertAuthEnforced(t *testing.T) {
	tc := newTestCluster(t, 1)
	tc.startInProcess("m0")
	m := tc.node("m0").Member

	caPool := x509.NewCertPool()
	pem, err := os.ReadFile(tc.pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	caPool.AppendCertsFromPEM(pem)
	load := func(certFile, keyFile string) []tls.Certificate {
		t.Helper()
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	other := newTestPKI(t) // a CA the member does not trust
	otherClient := other.client(t)
	otherPeer := other.member(t, "m0", m.Address)
	right := tc.client
	// Each identity trusts the member's CA, so only the server's check of
	// the client certificate can fail.
	clientIDs := map[string][]tls.Certificate{
		"no certificate":            nil,
		"certificate of another CA": load(otherClient.CertFile, otherClient.KeyFile),
		"right certificate":         load(right.CertFile, right.KeyFile),
	}
	peerIDs := map[string][]tls.Certificate{
		"no certificate":            nil,
		"certificate of another CA": load(otherPeer.PeerCertFile, otherPeer.PeerKeyFile),
		"right certificate":         load(m.TLS.PeerCertFile, m.TLS.PeerKeyFile),
	}

	get := func(base string, certs []tls.Certificate) error {
		hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: caPool, Certificates: certs, MinVersion: tls.VersionTLS12},
		}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(base + "/version")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return nil
	}
	grpcGet := func(certs []tls.Certificate) error {
		c, err := NewClient([]string{m.ClientURL()}, &tls.Config{RootCAs: caPool, Certificates: certs}, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		_, err = c.Get(ctx, "health")
		return err
	}
	for _, tt := range []struct {
		port, base string
		ids        map[string][]tls.Certificate
	}{
		{"client", m.ClientURL(), clientIDs},
		{"peer", m.PeerURL(), peerIDs},
	} {
		for name, certs := range tt.ids {
			t.Run(tt.port+" port, "+name, func(t *testing.T) {
				err := get(tt.base, certs)
				want := name == "right certificate"
				if want && err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !want {
					if err == nil {
						t.Fatal("answered")
					}
					// The server's alert: "certificate required" or
					// "unknown certificate authority".
					if !strings.Contains(err.Error(), "remote error: tls: ") {
						t.Fatalf("want the server's TLS alert, got %v", err)
					}
					t.Logf("refused as it should be: %v", err)
				}
				if tt.port != "client" {
					return
				}
				err = grpcGet(certs)
				if want && err != nil {
					t.Fatalf("gRPC refused: %v", err)
				}
				if !want && err == nil {
					t.Fatal("gRPC Get answered")
				}
			})
		}
	}
}
