package pki

import (
	"crypto/x509"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"
)

// Values of CertStatus.SANDrift besides a description of the difference.
const (
	DriftOK         = "ok"
	DriftNotChecked = "-" // no plan, or nothing in it to compare with
)

// CertStatus is one line of `haplane pki check`.
type CertStatus struct {
	Name     string        `json:"name"`
	Expires  time.Time     `json:"expires"`
	Residual time.Duration `json:"-"`
	// ResidualSeconds is Residual for scripts.
	ResidualSeconds int64  `json:"residualSeconds"`
	CA              string `json:"ca"` // signing CA, or "self" for a CA
	ChainOK         bool   `json:"chainOK"`
	// SANDrift compares a leaf's subject, SANs and usages with the plan:
	// DriftOK, DriftNotChecked (no plan; and always for CAs, whose names
	// are the operator's when they bring their own), or what differs.
	SANDrift string   `json:"sanDrift"`
	Problems []string `json:"problems,omitempty"`
}

// OK reports a certificate with no problem.
func (s CertStatus) OK() bool { return len(s.Problems) == 0 }

// Check inspects a host's tree as kubeadm lays it out: files maps paths
// relative to /etc/kubernetes ("pki/ca.crt", "admin.conf") to contents.
//
// Without a plan, every certificate and kubeconfig found is checked for
// expiry and for a chain to some CA of the same tree. With a plan, the tree
// is held to what the plan says host has: a CA certificate or leaf it lacks
// is "missing"; each leaf must be signed by the plan's CA for it and match
// the plan's subject, SANs, usages and key algorithm (SAN drift); a CA key,
// the service-account key or a kubeadm certificate the plan does not give
// this host is "unexpected" (left by an earlier plan: `pki generate`
// removes those). A certificate is a problem when it is expired, expires
// within warn, drifted, is missing, unexpected or does not chain.
func Check(files map[string][]byte, p *Plan, host string, now time.Time, warn time.Duration) []CertStatus {
	var out []CertStatus
	var planCAs, planCAKeys []string
	if p != nil {
		if _, ok := p.Host(host); !ok {
			return []CertStatus{{Name: host, SANDrift: DriftNotChecked, Problems: []string{fmt.Sprintf("pki: host %q is not in the plan", host)}}}
		}
		planCAs, planCAKeys = p.CACertsFor(host), p.CAKeysFor(host)
	}
	unexpected := fmt.Sprintf("unexpected: not in the plan for %s (left by an earlier plan? pki generate removes it)", host)

	cas := map[string]*x509.Certificate{}
	for _, spec := range CAs {
		data, ok := files[path.Join("pki", spec.Name+".crt")]
		st := CertStatus{Name: spec.Name, CA: "self", SANDrift: DriftNotChecked}
		planned := p != nil && slices.Contains(planCAs, spec.Name)
		if !ok {
			if planned {
				st.Problems = append(st.Problems, "missing")
				out = append(out, st)
			}
			continue
		}
		if p != nil && !planned {
			st.Problems = append(st.Problems, unexpected)
		}
		c, err := ParseCertPEM(data)
		if err != nil {
			st.Problems = append(st.Problems, "unreadable: "+err.Error())
			out = append(out, st)
			continue
		}
		cas[spec.Name] = c
		st.ChainOK = c.IsCA && c.CheckSignatureFrom(c) == nil
		if !st.ChainOK {
			st.Problems = append(st.Problems, "not a self-signed CA")
		}
		expiry(&st, c, now, warn)
		out = append(out, st)
	}

	// Signing keys the plan keeps elsewhere: on this host they are a
	// liability, not just clutter.
	if p != nil {
		h, _ := p.Host(host)
		for _, spec := range CAs {
			if _, ok := files[path.Join("pki", spec.Name+".key")]; ok && !slices.Contains(planCAKeys, spec.Name) {
				out = append(out, CertStatus{Name: spec.Name + ".key", SANDrift: DriftNotChecked,
					Problems: []string{fmt.Sprintf("unexpected CA key: the plan keeps no %s key on %s (%s)", spec.Name, host, h.Role)}})
			}
		}
		if _, ok := files["pki/sa.key"]; ok && h.Role != RoleControlPlane {
			out = append(out, CertStatus{Name: "sa.key", SANDrift: DriftNotChecked,
				Problems: []string{fmt.Sprintf("unexpected service-account key: the plan keeps it on control-plane hosts only, %s is %s", host, h.Role)}})
		}
	}

	type leaf struct {
		name, file string
		spec       *LeafSpec
		kubeconfig bool
		unexpected bool
	}
	var leaves []leaf
	seen := map[string]bool{}
	if p != nil {
		specs, err := p.Leaves(host)
		if err != nil {
			return append(out, CertStatus{Name: host, SANDrift: DriftNotChecked, Problems: []string{err.Error()}})
		}
		for i := range specs {
			leaves = append(leaves, leaf{name: specs[i].Name, file: path.Join("pki", specs[i].Name+".crt"), spec: &specs[i]})
			seen[path.Join("pki", specs[i].Name+".crt")] = true
		}
		for _, kc := range p.Kubeconfigs(host) {
			spec := LeafSpec{Name: kc.File, CA: CA, CN: kc.User, Orgs: kc.Orgs, Usages: clientAuth}
			leaves = append(leaves, leaf{name: kc.File, file: kc.File, spec: &spec, kubeconfig: true})
			seen[kc.File] = true
		}
	}
	// Without a plan (or beyond it), check whatever else is there.
	var extra []string
	for f := range files {
		isLeaf := strings.HasPrefix(f, "pki/") && strings.HasSuffix(f, ".crt") && !isCAFile(f)
		isConf := !strings.Contains(f, "/") && strings.HasSuffix(f, ".conf")
		if (isLeaf || isConf) && !seen[f] {
			extra = append(extra, f)
		}
	}
	sort.Strings(extra)
	for _, f := range extra {
		name := strings.TrimSuffix(strings.TrimPrefix(f, "pki/"), ".crt")
		// Only kubeadm's own names are judged against the plan: an
		// operator's extra certificate (an OIDC CA, say) is not stale.
		leaves = append(leaves, leaf{name: name, file: f, kubeconfig: strings.HasSuffix(f, ".conf"),
			unexpected: p != nil && slices.Contains(KnownHostFiles, f)})
	}

	for _, l := range leaves {
		st := CertStatus{Name: l.name, SANDrift: DriftNotChecked}
		if l.spec != nil {
			st.CA = l.spec.CA
		}
		data, ok := files[l.file]
		if !ok {
			st.Problems = append(st.Problems, "missing")
			out = append(out, st)
			continue
		}
		if l.unexpected {
			st.Problems = append(st.Problems, unexpected)
		}
		var c *x509.Certificate
		var err error
		if l.kubeconfig {
			var k Kubeconfig
			if k, err = ParseKubeconfig(data); err == nil {
				c, err = ParseCertPEM(k.ClientCert)
			}
		} else {
			c, err = ParseCertPEM(data)
		}
		if err != nil {
			st.Problems = append(st.Problems, "unreadable: "+err.Error())
			out = append(out, st)
			continue
		}
		expiry(&st, c, now, warn)
		if l.spec == nil {
			st.CA = issuerName(c, cas)
			if st.CA == "" {
				st.CA = c.Issuer.CommonName
				st.Problems = append(st.Problems, "does not chain to a CA in this folder")
			} else {
				st.ChainOK = true
			}
			out = append(out, st)
			continue
		}
		// With a plan the signer is the plan's CA for this leaf, not any CA
		// that happens to be in the folder.
		switch ca := cas[l.spec.CA]; {
		case ca == nil:
			st.Problems = append(st.Problems, fmt.Sprintf("cannot verify: its CA %s.crt is missing", l.spec.CA))
		case c.CheckSignatureFrom(ca) == nil:
			st.ChainOK = true
		default:
			if other := issuerName(c, cas); other != "" {
				st.CA = other
				st.Problems = append(st.Problems, fmt.Sprintf("signed by %s, the plan says %s", other, l.spec.CA))
			} else {
				st.CA = c.Issuer.CommonName
				st.Problems = append(st.Problems, fmt.Sprintf("does not chain to %s", l.spec.CA))
			}
		}
		st.SANDrift = Drift(c, *l.spec)
		if st.SANDrift == "" {
			st.SANDrift = DriftOK
		} else {
			st.Problems = append(st.Problems, "drifted from the cluster file")
		}
		if have, want := KeyAlgorithmOf(c.PublicKey), p.keyAlgorithm(); have != want {
			st.Problems = append(st.Problems, fmt.Sprintf("key algorithm %s, the cluster file says %s", have, want))
		}
		out = append(out, st)
	}
	return out
}

func isCAFile(f string) bool {
	for _, s := range CAs {
		if f == path.Join("pki", s.Name+".crt") {
			return true
		}
	}
	return false
}

func issuerName(c *x509.Certificate, cas map[string]*x509.Certificate) string {
	names := make([]string, 0, len(cas))
	for n := range cas {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if c.CheckSignatureFrom(cas[n]) == nil {
			return n
		}
	}
	return ""
}

func expiry(st *CertStatus, c *x509.Certificate, now time.Time, warn time.Duration) {
	st.Expires = c.NotAfter
	st.Residual = c.NotAfter.Sub(now)
	st.ResidualSeconds = int64(st.Residual / time.Second)
	switch {
	case st.Residual <= 0:
		st.Problems = append(st.Problems, "expired")
	case st.Residual < warn:
		st.Problems = append(st.Problems, fmt.Sprintf("expires within %s", warn))
	}
	if now.Before(c.NotBefore) {
		st.Problems = append(st.Problems, "not valid yet")
	}
}
