package health

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/haplane/haplane/internal/testutil/testcerts"
)

// TestProbeResumesAndStillVerifies: most probes resume the TLS session
// (no signature on the target, no chain verification on the prober), one
// in fullHandshakeEvery does a full handshake; when the target's
// certificate changes to one the CA did not sign, that full handshake
// fails the probe within fullHandshakeEvery probes.
func TestProbeResumesAndStillVerifies(t *testing.T) {
	good, other := testcerts.NewPair(t, "backend", "backend", "127.0.0.1"), testcerts.NewPair(t, "backend", "backend", "127.0.0.1")
	var resumed, full atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS.DidResume {
			resumed.Add(1)
		} else {
			full.Add(1)
		}
	}))
	var mu sync.Mutex
	cert := good.Server
	// A config per handshake (GetConfigForClient is always asked, unlike
	// GetCertificate without SNI), sharing one ticket key so sessions
	// resume across them.
	var key [32]byte
	key[0] = 1
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		return &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketKey: key}, nil
	}}
	srv.StartTLS()
	defer srv.Close()

	p, err := NewProber(srv.Listener.Addr().String(), ProbeConfig{RootCAs: good.Pool, Path: "/readyz"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 3 * fullHandshakeEvery
	for i := range n {
		if r := p.Probe(t.Context()); !r.OK {
			t.Fatalf("probe %d: %v", i, r.Err)
		}
	}
	// The first probe has no session; then one full handshake in every
	// fullHandshakeEvery lookups.
	if f, r := full.Load(), resumed.Load(); f != 1+n/fullHandshakeEvery || f+r != n {
		t.Errorf("%d full and %d resumed handshakes in %d probes, want %d full", f, r, n, 1+n/fullHandshakeEvery)
	}

	// The target now presents a certificate of another CA: resumed probes
	// may pass, the next full handshake must not.
	mu.Lock()
	cert = other.Server
	mu.Unlock()
	failed := -1
	for i := range fullHandshakeEvery {
		if r := p.Probe(t.Context()); !r.OK {
			failed = i
			break
		}
	}
	if failed < 0 {
		t.Errorf("a certificate the CA did not sign passed %d probes in a row", fullHandshakeEvery)
	}
}

// TestProbeKeyExchange: probes offer the classic groups only (no hybrid
// ML-KEM share, which costs both ends an ML-KEM operation and the
// ClientHello a second segment), and still reach a target that allows
// the NIST curves only.
func TestProbeKeyExchange(t *testing.T) {
	pki := testcerts.NewPair(t, "backend", "backend", "127.0.0.1")
	for _, tt := range []struct {
		name   string
		server []tls.CurveID // nil: Go's default, hybrid first
		want   tls.CurveID
	}{
		{"default target", nil, tls.X25519},
		{"NIST curves only", []tls.CurveID{tls.CurveP256, tls.CurveP384}, tls.CurveP256},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []tls.CurveID
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				got = append(got, r.TLS.CurveID)
				mu.Unlock()
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.Server}, CurvePreferences: tt.server}
			srv.StartTLS()
			defer srv.Close()
			p, err := NewProber(srv.Listener.Addr().String(), ProbeConfig{RootCAs: pki.Pool, Path: "/readyz"})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			for i := range 2 { // a full handshake, then a resumed one
				if r := p.Probe(t.Context()); !r.OK {
					t.Fatalf("probe %d: %v", i, r.Err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 2 || got[0] != tt.want || got[1] != tt.want {
				t.Errorf("key exchange groups %v, want %v on both probes", got, tt.want)
			}
		})
	}
}
