package pki

import (
	"crypto/x509"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"
)

// CertStatus is one line of `haplane pki check`.
type CertStatus struct {
	Name     string        `json:"name"`
	Expires  time.Time     `json:"expires"`
	Residual time.Duration `json:"-"`
	// ResidualSeconds is Residual for scripts.
	ResidualSeconds int64    `json:"residualSeconds"`
	CA              string   `json:"ca"` // signing CA, or "self" for a CA
	ChainOK         bool     `json:"chainOK"`
	Drift           string   `json:"sanDrift,omitempty"`
	Problems        []string `json:"problems,omitempty"`
}

// OK reports a certificate with no problem.
func (s CertStatus) OK() bool { return len(s.Problems) == 0 }

// Check inspects a host's tree as kubeadm lays it out: files maps paths
// relative to /etc/kubernetes ("pki/ca.crt", "admin.conf") to contents.
// With a plan, each leaf is compared with what the plan says host should
// have (SAN drift), and missing certificates are reported. A certificate is
// a problem when it is expired, expires within warn, drifted, or does not
// chain to its CA in the same tree.
func Check(files map[string][]byte, p *Plan, host string, now time.Time, warn time.Duration) []CertStatus {
	var out []CertStatus
	cas := map[string]*x509.Certificate{}
	for _, spec := range CAs {
		data, ok := files[path.Join("pki", spec.Name+".crt")]
		if !ok {
			continue
		}
		st := CertStatus{Name: spec.Name, CA: "self"}
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

	type leaf struct {
		name, file string
		spec       *LeafSpec
		kubeconfig bool
	}
	var leaves []leaf
	seen := map[string]bool{}
	if p != nil {
		specs, err := p.Leaves(host)
		if err != nil {
			return append(out, CertStatus{Name: host, Problems: []string{err.Error()}})
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
		leaves = append(leaves, leaf{name: name, file: f, kubeconfig: strings.HasSuffix(f, ".conf")})
	}

	for _, l := range leaves {
		st := CertStatus{Name: l.name}
		data, ok := files[l.file]
		if !ok {
			st.Problems = append(st.Problems, "missing")
			out = append(out, st)
			continue
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
		st.CA = issuerName(c, cas)
		if st.CA == "" {
			st.CA = c.Issuer.CommonName
			st.Problems = append(st.Problems, "does not chain to a CA in this folder")
		} else {
			st.ChainOK = true
		}
		if l.spec != nil {
			if d := Drift(c, *l.spec); d != "" {
				st.Drift = d
				st.Problems = append(st.Problems, "drifted from the cluster file")
			}
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
