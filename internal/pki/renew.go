package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"path"
	"sort"
	"time"
)

// Held is one leaf certificate a host holds, as the renewer sees it.
type Held struct {
	// Name is the leaf's name: a file stem ("apiserver", "etcd/server")
	// or a kubeconfig ("admin.conf").
	Name string `json:"name"`
	// File is where it lives, relative to the host's /etc/kubernetes
	// ("pki/apiserver.crt", "admin.conf").
	File string `json:"file"`
	// CA is the signing CA's name ("ca", "etcd/ca").
	CA         string    `json:"ca"`
	Kubeconfig bool      `json:"kubeconfig,omitempty"`
	NotAfter   time.Time `json:"notAfter"`
}

// Inventory lists the leaves of host's plan that are in files (paths
// relative to /etc/kubernetes, as Check takes), with their expiry, in the
// plan's order. A leaf the host lacks is skipped: making it is `pki
// generate`'s (or a join's) job, not renewal's; one that cannot be read is
// an error naming it, and the rest are still listed.
func Inventory(p *Plan, host string, files map[string][]byte) ([]Held, error) {
	specs, err := p.Leaves(host)
	if err != nil {
		return nil, err
	}
	var out []Held
	var errs []error
	for _, s := range specs {
		f := path.Join("pki", s.Name+".crt")
		data, ok := files[f]
		if !ok {
			continue
		}
		c, err := ParseCertPEM(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("pki: %s: %w", f, err))
			continue
		}
		out = append(out, Held{Name: s.Name, File: f, CA: s.CA, NotAfter: c.NotAfter})
	}
	for _, kc := range p.Kubeconfigs(host) {
		data, ok := files[kc.File]
		if !ok {
			continue
		}
		k, err := ParseKubeconfig(data)
		var c *x509.Certificate
		if err == nil {
			c, err = ParseCertPEM(k.ClientCert)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pki: %s: %w", kc.File, err))
			continue
		}
		out = append(out, Held{Name: kc.File, File: kc.File, CA: CA, Kubeconfig: true, NotAfter: c.NotAfter})
	}
	return out, errors.Join(errs...)
}

// RenewalDelay is how long after a leaf enters the renewal window a node
// renews it: rank (the node's place in the cluster file, from 0) times
// stagger, so the nodes renew one after the other rather than together (a
// renewal may restart the node's controller-manager and scheduler, and the
// cluster keeps a leader only while some node's are up). It never exceeds
// half the window, so even the last node renews well before expiry.
func RenewalDelay(rank int, stagger, renewBefore time.Duration) time.Duration {
	d := time.Duration(rank) * stagger
	if d > renewBefore/2 {
		d = renewBefore / 2
	}
	if d < 0 {
		d = 0
	}
	return d
}

// Due returns the leaves of held that are due for renewal at now: those
// that expire within renewBefore-delay (delay from RenewalDelay). They come
// most urgent first (earliest expiry; names break ties), so a renewal cut
// short by an error has done the ones that matter most.
func Due(held []Held, now time.Time, renewBefore, delay time.Duration) []Held {
	var out []Held
	for _, h := range held {
		if h.NotAfter.Sub(now) < renewBefore-delay {
			out = append(out, h)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].NotAfter.Equal(out[j].NotAfter) {
			return out[i].NotAfter.Before(out[j].NotAfter)
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// NextDue is when the first of held becomes due (see Due), or the zero
// time when held is empty.
func NextDue(held []Held, renewBefore, delay time.Duration) time.Time {
	var t time.Time
	for _, h := range held {
		at := h.NotAfter.Add(-(renewBefore - delay))
		if t.IsZero() || at.Before(t) {
			t = at
		}
	}
	return t
}

// LeafSpecFor is the spec of host's leaf or kubeconfig called name.
func (p *Plan) LeafSpecFor(host, name string) (LeafSpec, error) {
	leaves, err := p.Leaves(host)
	if err != nil {
		return LeafSpec{}, err
	}
	for _, l := range leaves {
		if l.Name == name {
			return l, nil
		}
	}
	for _, kc := range p.Kubeconfigs(host) {
		if kc.File == name {
			return LeafSpec{Name: kc.File, CA: CA, CN: kc.User, Orgs: kc.Orgs, Usages: clientAuth}, nil
		}
	}
	return LeafSpec{}, fmt.Errorf("pki: %s has no certificate %q in the plan", host, name)
}

// KubeconfigSpecFor is host's kubeconfig called file.
func (p *Plan) KubeconfigSpecFor(host, file string) (KubeconfigSpec, bool) {
	for _, kc := range p.Kubeconfigs(host) {
		if kc.File == file {
			return kc, true
		}
	}
	return KubeconfigSpec{}, false
}

// Renew re-issues old: the same public key (so the key file on disk stays
// as it is and a reader never sees a certificate and a key that do not
// match, whichever of the two it reads first), the names the plan gives
// spec, and a fresh validity from now. This is kubeadm's `certs renew`:
// renewal extends a certificate; a new key is `pki generate`'s business.
//
// It refuses an old certificate that ca did not sign: renewal keeps a chain,
// it does not move one.
func Renew(spec LeafSpec, old *x509.Certificate, ca KeyPair, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	if err := old.CheckSignatureFrom(ca.Cert); err != nil {
		return nil, fmt.Errorf("pki: renew %s: not signed by the current %s: %w", spec.Name, spec.CA, err)
	}
	return Sign(spec, old.PublicKey, ca, now, validity)
}

// RenewKubeconfig re-renders a kubeconfig with its client certificate
// renewed for the same key (see Renew); server and CA are the plan's.
func RenewKubeconfig(p *Plan, kc KubeconfigSpec, old []byte, ca KeyPair, now time.Time) ([]byte, error) {
	k, err := ParseKubeconfig(old)
	if err != nil {
		return nil, fmt.Errorf("pki: renew %s: %w", kc.File, err)
	}
	kp, err := ParseKeyPair(k.ClientCert, k.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("pki: renew %s: %w", kc.File, err)
	}
	spec := LeafSpec{Name: kc.File, CA: CA, CN: kc.User, Orgs: kc.Orgs, Usages: clientAuth}
	cert, err := Renew(spec, kp.Cert, ca, now, p.validity())
	if err != nil {
		return nil, err
	}
	return KubeconfigYAML(p.ClusterName, kc, CertPEM(ca.Cert), cert, kp.Key)
}

// KubeconfigWithCert replaces a kubeconfig's client certificate with cert,
// which must be for the kubeconfig's own key (a renewal signed elsewhere).
func KubeconfigWithCert(p *Plan, kc KubeconfigSpec, old []byte, caPEM []byte, cert *x509.Certificate) ([]byte, error) {
	k, err := ParseKubeconfig(old)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", kc.File, err)
	}
	key, err := ParseKeyPEM(k.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", kc.File, err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("pki: %s: the new certificate is not for the kubeconfig's key", kc.File)
	}
	return KubeconfigYAML(p.ClusterName, kc, caPEM, cert, key)
}

// KubeconfigKey is the client key embedded in a kubeconfig.
func KubeconfigKey(data []byte) (crypto.Signer, error) {
	k, err := ParseKubeconfig(data)
	if err != nil {
		return nil, err
	}
	return ParseKeyPEM(k.ClientKey)
}
