package lb

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/haplane/haplane/internal/testutil/testcerts"
)

// testPKI is a CA and a server certificate for "backend", 127.0.0.1-3 and
// 10.77.4.2, .11, .12 and .13.
type testPKI struct {
	pool   *x509.CertPool
	caPEM  []byte
	server tls.Certificate
}

func newTestPKI(t testing.TB) testPKI {
	t.Helper()
	ca := testcerts.NewCA(t, "test-ca")
	srv := ca.Server(t, "backend", "backend", "127.0.0.1", "127.0.0.2", "127.0.0.3",
		"10.77.4.2", "10.77.4.11", "10.77.4.12", "10.77.4.13")
	return testPKI{pool: ca.Pool, caPEM: ca.PEM, server: srv}
}
