package lb

import (
	"crypto/x509"
	"net"
	"testing"
)

// Hooks for the external CLI test (package lb_test).

// NewTestPKI returns a CA (as a pool and PEM) and a helper starting HTTPS
// backends whose certificate it signed.
func NewTestPKI(t *testing.T) (pool *x509.CertPool, caPEM []byte, start func(ln net.Listener, name string) (setStatus func(int), hits func() int64)) {
	pki := newTestPKI(t)
	return pki.pool, pki.caPEM, func(ln net.Listener, name string) (func(int), func() int64) {
		b := startTLSBackend(t, pki, ln, name)
		return func(s int) { b.status.Store(int32(s)) }, b.hits.Load
	}
}

// NewNetnsListen makes a namespace holding addrs (in 10.77.4.0/24) behind a
// veth, and returns a function listening inside it.
func NewNetnsListen(t *testing.T, addrs ...string) func(addr string) net.Listener {
	h := newNetnsHost(t, addrs...)
	return func(addr string) net.Listener { return h.listen(t, addr) }
}
