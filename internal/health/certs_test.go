package health

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/haplane/haplane/internal/testutil/testcerts"
)

// testPKI is a CA and a server certificate for 127.0.0.1 and "backend".
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
}

func newTestPKI(t testing.TB) testPKI {
	t.Helper()
	ca := testcerts.NewCA(t, "test-ca")
	return testPKI{pool: ca.Pool, server: ca.Server(t, "backend", "backend", "127.0.0.1")}
}
