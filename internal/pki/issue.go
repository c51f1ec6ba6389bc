package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"strings"
	"time"
)

// KeyPair is a certificate with its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewKey makes a private key of the plan's algorithm.
func NewKey(alg string) (crypto.Signer, error) {
	switch alg {
	case RSA2048, "":
		return rsa.GenerateKey(rand.Reader, 2048)
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("pki: unknown key algorithm %q", alg)
}

// KeyAlgorithmOf names a public key's algorithm as the cluster file does
// (rsa2048, ecdsa-p256), or describes it ("rsa4096", "ecdsa-p384",
// "ed25519") when the cluster file has no name for it.
func KeyAlgorithmOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		// Curve names are "P-256", "P-384": ecdsa-p256, ecdsa-p384.
		return "ecdsa-" + strings.ToLower(strings.ReplaceAll(k.Curve.Params().Name, "-", ""))
	case ed25519.PublicKey:
		return "ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// serial is a random positive 63-bit serial number, as kubeadm's.
func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(math.MaxInt64))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

// keyUsage is what kubeadm sets on every certificate, whatever the key type.
const keyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment

// NewCA makes a self-signed CA as kubeadm does: CN and a DNS SAN of the same
// name, CA:TRUE, subject key id, valid from now-Backdate for caValidity.
func NewCA(spec CASpec, key crypto.Signer, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: spec.CN},
		DNSNames:              []string{spec.CN},
		NotBefore:             now.Add(-Backdate).UTC(),
		NotAfter:              now.Add(validity).UTC(),
		KeyUsage:              keyUsage | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA %s: %w", spec.Name, err)
	}
	return x509.ParseCertificate(der)
}

// Sign issues a leaf for pub from spec, signed by ca.
func Sign(spec LeafSpec, pub crypto.PublicKey, ca KeyPair, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: spec.CN, Organization: spec.Orgs},
		DNSNames:              spec.DNS,
		NotBefore:             now.Add(-Backdate).UTC(),
		NotAfter:              now.Add(validity).UTC(),
		KeyUsage:              keyUsage,
		ExtKeyUsage:           spec.Usages,
		BasicConstraintsValid: true,
	}
	for _, ip := range spec.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	// A leaf never outlives its CA.
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign %s: %w", spec.Name, err)
	}
	return x509.ParseCertificate(der)
}

// CertPEM encodes a certificate.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as kubeadm does: PKCS#1 for RSA, SEC 1 for
// ECDSA.
func KeyPEM(k crypto.Signer) ([]byte, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	}
	return nil, fmt.Errorf("pki: unsupported key type %T", k)
}

// PublicKeyPEM encodes a public key as PKIX, as kubeadm's sa.pub.
func PublicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParseCertPEM decodes the first certificate in data.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate: %w", err)
			}
			return c, nil
		}
	}
}

// ParseKeyPEM decodes a private key in PKCS#1, SEC 1 or PKCS#8 form.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch blk.Type {
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(blk.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported key type %T", k)
			}
			return s, nil
		}
	}
}

// ParseKeyPair decodes a certificate and its key and checks they match.
func ParseKeyPair(certPEM, keyPEM []byte) (KeyPair, error) {
	c, err := ParseCertPEM(certPEM)
	if err != nil {
		return KeyPair{}, err
	}
	k, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return KeyPair{}, err
	}
	if !publicKeysEqual(c.PublicKey, k.Public()) {
		return KeyPair{}, errors.New("the key does not belong to the certificate")
	}
	return KeyPair{Cert: c, Key: k}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}
