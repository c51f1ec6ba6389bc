package pki

import (
	"testing"
	"time"
)

// FuzzParse feeds the loaders arbitrary bytes: they must return an error,
// never panic, and anything they accept must be usable.
func FuzzParse(f *testing.F) {
	files, _, err := Generate(labPlan(ECDSAP256), nil, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(files["cp1/pki/apiserver.crt"].Data, files["cp1/pki/apiserver.key"].Data)
	f.Add(files["cp1/admin.conf"].Data, []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n"), []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if c, err := ParseCertPEM(a); err == nil && c.Raw == nil {
			t.Fatal("accepted certificate without raw bytes")
		}
		if k, err := ParseKeyPEM(b); err == nil && k.Public() == nil {
			t.Fatal("accepted key without a public half")
		}
		if kp, err := ParseKeyPair(a, b); err == nil && !publicKeysEqual(kp.Cert.PublicKey, kp.Key.Public()) {
			t.Fatal("mismatched key pair accepted")
		}
		if k, err := ParseKubeconfig(a); err == nil && k.Server == "" {
			t.Fatal("kubeconfig without server accepted")
		}
	})
}
