package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strings"
	"time"
)

// Layout of a generated tree, relative to its root:
//
//	_ca/                 every CA key and certificate and the service-account
//	                     key pair: the material new certificates are signed
//	                     with. Keep it offline; no host needs all of it.
//	<host>/pki/...       what the host keeps in /etc/kubernetes/pki
//	<host>/*.conf        its kubeconfigs (control-plane hosts)
const CADir = "_ca"

// File is one generated file.
type File struct {
	Data []byte
	Mode fs.FileMode
}

// Action says what Generate did with one file.
type Action struct {
	Path string `json:"path"`
	Verb string `json:"action"` // created, kept, reissued, removed
	Why  string `json:"why,omitempty"`
	// Warning is set on something kept that no longer matches the cluster
	// file and that Generate will not change by itself (a CA or the
	// service-account key of another key algorithm): the operator decides.
	Warning string `json:"warning,omitempty"`
}

// Verbs of an Action.
const (
	Created  = "created"
	Kept     = "kept"
	Reissued = "reissued"
	Removed  = "removed"
)

// Generate produces the whole tree for p. existing holds what is already
// there (path -> contents, as read by ReadTree): CAs, the service-account key
// and leaves that are valid, chain to their CA, match the plan (names, key
// usages, key algorithm) and do not expire within RenewBefore are kept; the
// rest are (re)issued. Files of kubeadm's set that sit in a plan host's
// folder but are no longer in its plan (etcd member certificates after a
// move to external etcd, say) get a "removed" action: the caller deletes
// them (RemoveStale). Files haplane does not know are never touched.
func Generate(p *Plan, existing map[string][]byte, now time.Time) (map[string]File, []Action, error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	g := &generator{p: p, old: existing, now: now, out: map[string]File{}, cas: map[string]KeyPair{}}
	for _, spec := range CAs {
		if err := g.ca(spec); err != nil {
			return nil, nil, err
		}
	}
	if err := g.serviceAccount(); err != nil {
		return nil, nil, err
	}
	for _, h := range p.Hosts {
		if err := g.host(h); err != nil {
			return nil, nil, err
		}
	}
	g.stale()
	sort.Slice(g.actions, func(i, j int) bool { return g.actions[i].Path < g.actions[j].Path })
	return g.out, g.actions, nil
}

type generator struct {
	p       *Plan
	old     map[string][]byte
	now     time.Time
	out     map[string]File
	cas     map[string]KeyPair
	saKey   []byte
	saPub   []byte
	actions []Action
}

func (g *generator) act(p, verb, why string) {
	g.actions = append(g.actions, Action{Path: p, Verb: verb, Why: why})
}

func (g *generator) put(p string, data []byte, mode fs.FileMode) {
	g.out[p] = File{Data: data, Mode: mode}
}

// ca loads a CA from _ca, or from the first host that has it, or makes one.
func (g *generator) ca(spec CASpec) error {
	candidates := []string{CADir}
	for _, h := range g.p.Hosts {
		candidates = append(candidates, path.Join(h.Name, "pki"))
	}
	for _, dir := range candidates {
		c, k := g.old[path.Join(dir, spec.Name+".crt")], g.old[path.Join(dir, spec.Name+".key")]
		if c == nil || k == nil {
			continue
		}
		kp, err := ParseKeyPair(c, k)
		if err != nil {
			return fmt.Errorf("pki: existing CA %s/%s: %w", dir, spec.Name, err)
		}
		if !kp.Cert.IsCA {
			return fmt.Errorf("pki: existing %s/%s.crt is not a CA", dir, spec.Name)
		}
		if !g.now.Before(kp.Cert.NotAfter) {
			return fmt.Errorf("pki: CA %s expired on %s; renewing a CA means re-issuing every certificate: move the old tree away first", spec.Name, kp.Cert.NotAfter.Format(time.DateOnly))
		}
		g.cas[spec.Name] = kp
		g.act(path.Join(CADir, spec.Name+".crt"), Kept, "")
		// A CA of another algorithm than the cluster file's is kept, and
		// said so: replacing it would silently invalidate every certificate
		// and kubeconfig in use (kubelets, etcd members, admins), which is
		// a CA rotation, done on purpose and in steps, not by a re-run. The
		// leaves get keys of the new algorithm, signed by the old CA, which
		// TLS accepts.
		if have, want := KeyAlgorithmOf(kp.Cert.PublicKey), g.p.keyAlgorithm(); have != want {
			g.actions[len(g.actions)-1].Warning = fmt.Sprintf("CA key is %s, the cluster file says %s; CAs are never replaced by generate: rotate the CA deliberately (new CA trusted next to the old one, re-issue, then drop the old) to change it", have, want)
		}
		g.put(path.Join(CADir, spec.Name+".crt"), c, 0o644)
		g.put(path.Join(CADir, spec.Name+".key"), k, 0o600)
		return nil
	}
	key, err := NewKey(g.p.keyAlgorithm())
	if err != nil {
		return err
	}
	cert, err := NewCA(spec, key, g.now, g.p.caValidity())
	if err != nil {
		return err
	}
	keyPEM, err := KeyPEM(key)
	if err != nil {
		return err
	}
	g.cas[spec.Name] = KeyPair{Cert: cert, Key: key}
	g.act(path.Join(CADir, spec.Name+".crt"), Created, "")
	g.put(path.Join(CADir, spec.Name+".crt"), CertPEM(cert), 0o644)
	g.put(path.Join(CADir, spec.Name+".key"), keyPEM, 0o600)
	return nil
}

func (g *generator) serviceAccount() error {
	candidates := []string{CADir}
	for _, h := range g.p.Hosts {
		candidates = append(candidates, path.Join(h.Name, "pki"))
	}
	for _, dir := range candidates {
		k := g.old[path.Join(dir, "sa.key")]
		if k == nil {
			continue
		}
		key, err := ParseKeyPEM(k)
		if err != nil {
			return fmt.Errorf("pki: existing %s/sa.key: %w", dir, err)
		}
		pub, err := PublicKeyPEM(key.Public())
		if err != nil {
			return err
		}
		g.saKey, g.saPub = k, pub
		g.act(path.Join(CADir, "sa.key"), Kept, "")
		// Same reasoning as for the CAs: a new service-account key
		// invalidates every service-account token in the cluster.
		if have, want := KeyAlgorithmOf(key.Public()), g.p.keyAlgorithm(); have != want {
			g.actions[len(g.actions)-1].Warning = fmt.Sprintf("service-account key is %s, the cluster file says %s; it is never replaced by generate (every service-account token is signed with it): rotate it deliberately to change it", have, want)
		}
		break
	}
	if g.saKey == nil {
		key, err := NewKey(g.p.keyAlgorithm())
		if err != nil {
			return err
		}
		if g.saKey, err = KeyPEM(key); err != nil {
			return err
		}
		if g.saPub, err = PublicKeyPEM(key.Public()); err != nil {
			return err
		}
		g.act(path.Join(CADir, "sa.key"), Created, "")
	}
	g.put(path.Join(CADir, "sa.key"), g.saKey, 0o600)
	g.put(path.Join(CADir, "sa.pub"), g.saPub, 0o600)
	return nil
}

func (g *generator) host(h Host) error {
	dir := path.Join(h.Name, "pki")
	for _, name := range g.p.CACertsFor(h.Name) {
		g.put(path.Join(dir, name+".crt"), CertPEM(g.cas[name].Cert), 0o644)
	}
	for _, name := range g.p.CAKeysFor(h.Name) {
		g.put(path.Join(dir, name+".key"), g.out[path.Join(CADir, name+".key")].Data, 0o600)
	}
	if h.Role == RoleControlPlane {
		g.put(path.Join(dir, "sa.key"), g.saKey, 0o600)
		g.put(path.Join(dir, "sa.pub"), g.saPub, 0o600)
	}
	leaves, err := g.p.Leaves(h.Name)
	if err != nil {
		return err
	}
	for _, spec := range leaves {
		if err := g.leaf(dir, spec); err != nil {
			return err
		}
	}
	for _, kc := range g.p.Kubeconfigs(h.Name) {
		if err := g.kubeconfig(h.Name, kc); err != nil {
			return err
		}
	}
	return nil
}

// KnownHostFiles is every file Generate can put in a host's folder, for any
// role and topology, relative to the host's folder: kubeadm's certificate,
// key and kubeconfig set. Only these are ever removed as stale.
var KnownHostFiles = func() []string {
	var out []string
	for _, ca := range CAs {
		out = append(out, "pki/"+ca.Name+".crt", "pki/"+ca.Name+".key")
	}
	out = append(out, "pki/sa.key", "pki/sa.pub")
	for _, leaf := range []string{"apiserver", "apiserver-kubelet-client", "front-proxy-client", "etcd/server", "etcd/peer", "etcd/healthcheck-client", "apiserver-etcd-client"} {
		out = append(out, "pki/"+leaf+".crt", "pki/"+leaf+".key")
	}
	// kubelet.conf is kubeadm's too, but haplane never writes it: an
	// operator's copy is not ours to remove.
	return append(out, "admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf")
}()

// stale marks for removal the known files of each plan host that the plan
// no longer has: left in place they look valid to a reader (and to `pki
// check` without a plan), e.g. an etcd CA key on a control-plane host after
// a move to external etcd.
func (g *generator) stale() {
	for _, h := range g.p.Hosts {
		for _, f := range KnownHostFiles {
			p := path.Join(h.Name, f)
			if _, had := g.old[p]; !had {
				continue
			}
			if _, planned := g.out[p]; !planned {
				g.act(p, Removed, "not in the plan for "+h.Name+" ("+h.Role+")")
			}
		}
	}
}

// leaf keeps or issues one leaf certificate.
// newLeaf makes a key of the plan's algorithm and its certificate for
// spec, signed by ca, valid for the plan's validity from g.now.
func (g *generator) newLeaf(spec LeafSpec, ca KeyPair) (crypto.Signer, *x509.Certificate, error) {
	key, err := NewKey(g.p.keyAlgorithm())
	if err != nil {
		return nil, nil, err
	}
	cert, err := Sign(spec, key.Public(), ca, g.now, g.p.validity())
	if err != nil {
		return nil, nil, err
	}
	return key, cert, nil
}

func (g *generator) leaf(dir string, spec LeafSpec) error {
	certPath, keyPath := path.Join(dir, spec.Name+".crt"), path.Join(dir, spec.Name+".key")
	ca := g.cas[spec.CA]
	if c, k := g.old[certPath], g.old[keyPath]; c != nil && k != nil {
		why := g.reasonToReissue(c, k, spec, ca)
		if why == "" {
			g.act(certPath, Kept, "")
			g.put(certPath, c, 0o644)
			g.put(keyPath, k, 0o600)
			return nil
		}
		g.act(certPath, Reissued, why)
	} else {
		g.act(certPath, Created, "")
	}
	key, cert, err := g.newLeaf(spec, ca)
	if err != nil {
		return err
	}
	keyPEM, err := KeyPEM(key)
	if err != nil {
		return err
	}
	g.put(certPath, CertPEM(cert), 0o644)
	g.put(keyPath, keyPEM, 0o600)
	return nil
}

// reasonToReissue says why an existing leaf cannot be kept, or "".
func (g *generator) reasonToReissue(certPEM, keyPEM []byte, spec LeafSpec, ca KeyPair) string {
	kp, err := ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	if err := kp.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		return "not signed by the current " + spec.CA
	}
	if have, want := KeyAlgorithmOf(kp.Cert.PublicKey), g.p.keyAlgorithm(); have != want {
		return fmt.Sprintf("key algorithm %s, the cluster file says %s", have, want)
	}
	if d := Drift(kp.Cert, spec); d != "" {
		return "drifted from the cluster file: " + d
	}
	if left := kp.Cert.NotAfter.Sub(g.now); left < g.p.RenewBefore {
		return fmt.Sprintf("expires in %s, within the renewal window", left.Round(time.Hour))
	}
	return ""
}

// Drift describes how cert differs from spec in subject, SANs, key usage or
// extended key usages; "" when it matches. The key algorithm is not part of
// it (see KeyAlgorithmOf).
func Drift(cert *x509.Certificate, spec LeafSpec) string {
	var d []string
	if cert.Subject.CommonName != spec.CN {
		d = append(d, fmt.Sprintf("CN %q, want %q", cert.Subject.CommonName, spec.CN))
	}
	if !sameSet(cert.Subject.Organization, spec.Orgs) {
		d = append(d, fmt.Sprintf("O %v, want %v", cert.Subject.Organization, spec.Orgs))
	}
	if !sameSet(cert.DNSNames, spec.DNS) {
		d = append(d, fmt.Sprintf("DNS SANs %v, want %v", cert.DNSNames, spec.DNS))
	}
	var have, want []string
	for _, ip := range cert.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			have = append(have, a.Unmap().String())
		}
	}
	for _, ip := range spec.IPs {
		want = append(want, ip.String())
	}
	if !sameSet(have, want) {
		d = append(d, fmt.Sprintf("IP SANs %v, want %v", have, want))
	}
	// kubeadm sets the same key usage on every leaf whatever the key type.
	if cert.KeyUsage != keyUsage {
		d = append(d, fmt.Sprintf("key usage %s, want %s", keyUsageString(cert.KeyUsage), keyUsageString(keyUsage)))
	}
	if !sameSet(ekuStrings(cert.ExtKeyUsage), ekuStrings(spec.Usages)) {
		d = append(d, fmt.Sprintf("extended key usages %v, want %v", ekuStrings(cert.ExtKeyUsage), ekuStrings(spec.Usages)))
	}
	return strings.Join(d, "; ")
}

var keyUsageNames = []struct {
	bit  x509.KeyUsage
	name string
}{
	{x509.KeyUsageDigitalSignature, "DigitalSignature"}, {x509.KeyUsageContentCommitment, "ContentCommitment"},
	{x509.KeyUsageKeyEncipherment, "KeyEncipherment"}, {x509.KeyUsageDataEncipherment, "DataEncipherment"},
	{x509.KeyUsageKeyAgreement, "KeyAgreement"}, {x509.KeyUsageCertSign, "CertSign"}, {x509.KeyUsageCRLSign, "CRLSign"},
	{x509.KeyUsageEncipherOnly, "EncipherOnly"}, {x509.KeyUsageDecipherOnly, "DecipherOnly"},
}

func keyUsageString(ku x509.KeyUsage) string {
	var names []string
	for _, k := range keyUsageNames {
		if ku&k.bit != 0 {
			names = append(names, k.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

func ekuStrings(ekus []x509.ExtKeyUsage) []string {
	out := make([]string, 0, len(ekus))
	for _, e := range ekus {
		switch e {
		case x509.ExtKeyUsageServerAuth:
			out = append(out, "ServerAuth")
		case x509.ExtKeyUsageClientAuth:
			out = append(out, "ClientAuth")
		case x509.ExtKeyUsageAny:
			out = append(out, "Any")
		default:
			out = append(out, fmt.Sprintf("EKU(%d)", e))
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// kubeconfig keeps or writes one kubeconfig with an embedded client
// certificate signed by the cluster CA.
func (g *generator) kubeconfig(host string, kc KubeconfigSpec) error {
	p := path.Join(host, kc.File)
	ca := g.cas[CA]
	spec := LeafSpec{Name: kc.File, CA: CA, CN: kc.User, Orgs: kc.Orgs, Usages: clientAuth}
	if old := g.old[p]; old != nil {
		k, err := ParseKubeconfig(old)
		switch {
		case err != nil:
			g.act(p, Reissued, "unreadable: "+err.Error())
		case k.Server != kc.Server:
			g.act(p, Reissued, fmt.Sprintf("server %s, want %s", k.Server, kc.Server))
		case string(k.CA) != string(CertPEM(ca.Cert)):
			g.act(p, Reissued, "embeds another cluster CA")
		default:
			if why := g.reasonToReissue(k.ClientCert, k.ClientKey, spec, ca); why != "" {
				g.act(p, Reissued, why)
			} else {
				g.act(p, Kept, "")
				g.put(p, old, 0o600)
				return nil
			}
		}
	} else {
		g.act(p, Created, "")
	}
	key, cert, err := g.newLeaf(spec, ca)
	if err != nil {
		return err
	}
	data, err := KubeconfigYAML(g.p.ClusterName, kc, CertPEM(ca.Cert), cert, key)
	if err != nil {
		return err
	}
	g.put(p, data, 0o600)
	return nil
}

// KubeconfigYAML renders a kubeconfig in kubeadm's shape.
func KubeconfigYAML(cluster string, kc KubeconfigSpec, caPEM []byte, cert *x509.Certificate, key crypto.Signer) ([]byte, error) {
	keyPEM, err := KeyPEM(key)
	if err != nil {
		return nil, err
	}
	b64 := base64.StdEncoding.EncodeToString
	ctx := kc.User + "@" + cluster
	return []byte(`apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: ` + b64(caPEM) + `
    server: ` + kc.Server + `
  name: ` + cluster + `
contexts:
- context:
    cluster: ` + cluster + `
    user: ` + kc.User + `
  name: ` + ctx + `
current-context: ` + ctx + `
kind: Config
preferences: {}
users:
- name: ` + kc.User + `
  user:
    client-certificate-data: ` + b64(CertPEM(cert)) + `
    client-key-data: ` + b64(keyPEM) + `
`), nil
}

// Kubeconfig is what ParseKubeconfig reads from a kubeconfig.
type Kubeconfig struct {
	Server     string
	CA         []byte
	ClientCert []byte
	ClientKey  []byte
}

// ParseKubeconfig reads the first cluster's server and CA and the first
// user's embedded client certificate and key from a kubeadm-shaped file.
func ParseKubeconfig(data []byte) (Kubeconfig, error) {
	var k Kubeconfig
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok {
			continue
		}
		dec := func(dst *[]byte) error {
			if *dst != nil {
				return nil
			}
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(val))
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			*dst = b
			return nil
		}
		var err error
		switch key {
		case "server":
			if k.Server == "" {
				k.Server = strings.TrimSpace(val)
			}
		case "certificate-authority-data":
			err = dec(&k.CA)
		case "client-certificate-data":
			err = dec(&k.ClientCert)
		case "client-key-data":
			err = dec(&k.ClientKey)
		}
		if err != nil {
			return Kubeconfig{}, err
		}
	}
	if k.Server == "" || k.CA == nil || k.ClientCert == nil || k.ClientKey == nil {
		return Kubeconfig{}, fmt.Errorf("not a kubeconfig with an embedded CA and client certificate")
	}
	return k, nil
}
