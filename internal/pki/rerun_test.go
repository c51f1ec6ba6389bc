package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// onePlan is the lab cluster with cp1 only: RSA keys are slow to make, and
// one host has every kind of certificate.
func onePlan(alg string) *Plan {
	p := labPlan(alg)
	p.Hosts = p.Hosts[:1]
	return p
}

func asExisting(files map[string]File) map[string][]byte {
	m := map[string][]byte{}
	for k, f := range files {
		m[k] = f.Data
	}
	return m
}

// hostTree is host's part of a generated tree, as that host holds it: the
// files below host/, by their path there.
func hostTree(files map[string]File, host string) map[string][]byte {
	m := map[string][]byte{}
	for k, f := range files {
		if rel, ok := strings.CutPrefix(k, host+"/"); ok {
			m[rel] = f.Data
		}
	}
	return m
}

func byVerb(actions []Action) map[string]map[string]Action {
	m := map[string]map[string]Action{}
	for _, a := range actions {
		if m[a.Verb] == nil {
			m[a.Verb] = map[string]Action{}
		}
		m[a.Verb][a.Path] = a
	}
	return m
}

// TestKeyAlgorithmChange: an RSA tree re-run with ecdsa-p256 gets every leaf
// and kubeconfig re-issued with an ECDSA key, still signed by the kept RSA
// CAs, and each CA (and the service-account key) is kept with a warning.
func TestKeyAlgorithmChange(t *testing.T) {
	now := time.Now()
	first, _, err := Generate(onePlan(RSA2048), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	existing := asExisting(first)
	files, actions, err := Generate(onePlan(ECDSAP256), existing, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	v := byVerb(actions)
	if len(v[Reissued]) != 7+4 {
		t.Errorf("reissued %d, want the 7 leaves and 4 kubeconfigs: %v", len(v[Reissued]), v[Reissued])
	}
	for p, a := range v[Reissued] {
		if a.Why != "key algorithm rsa2048, the cluster file says ecdsa-p256" {
			t.Errorf("%s reissued because %q", p, a.Why)
		}
	}
	if len(v[Kept]) != 4 {
		t.Errorf("kept %v, want the 3 CAs and sa.key", v[Kept])
	}
	for p, a := range v[Kept] {
		if !strings.Contains(a.Warning, "is rsa2048, the cluster file says ecdsa-p256") || !strings.Contains(a.Warning, "rotate") {
			t.Errorf("%s kept with warning %q", p, a.Warning)
		}
		if string(files[p].Data) != string(existing[p]) {
			t.Errorf("%s changed", p)
		}
	}
	// The new leaves are ECDSA and chain to the old RSA CA.
	pool := x509.NewCertPool()
	ca, _ := ParseCertPEM(files["_ca/ca.crt"].Data)
	pool.AddCert(ca)
	c, err := ParseCertPEM(files["cp1/pki/apiserver.crt"].Data)
	if err != nil {
		t.Fatal(err)
	}
	if KeyAlgorithmOf(c.PublicKey) != ECDSAP256 || KeyAlgorithmOf(ca.PublicKey) != RSA2048 {
		t.Errorf("apiserver key %s, CA key %s", KeyAlgorithmOf(c.PublicKey), KeyAlgorithmOf(ca.PublicKey))
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: serverAuth, CurrentTime: now.Add(time.Hour)}); err != nil {
		t.Errorf("new apiserver certificate does not verify against the kept CA: %v", err)
	}
	if _, err := ParseKeyPair(files["cp1/pki/apiserver.crt"].Data, files["cp1/pki/apiserver.key"].Data); err != nil {
		t.Errorf("apiserver key pair: %v", err)
	}
	// A third run with ecdsa-p256 keeps the leaves; the CA warnings stay
	// until the CAs are rotated.
	_, actions, err = Generate(onePlan(ECDSAP256), asExisting(files), now.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	warned := 0
	for _, a := range actions {
		if a.Verb != Kept {
			t.Errorf("third run: %s %s: %s", a.Verb, a.Path, a.Why)
		}
		if a.Warning != "" {
			warned++
		}
	}
	if warned != 4 {
		t.Errorf("third run: %d warnings, want 4", warned)
	}
}

// TestUsageDriftReissues: a leaf with kubeadm's names but other key usage
// or extended key usages is re-issued.
func TestUsageDriftReissues(t *testing.T) {
	now := time.Now()
	p := onePlan(ECDSAP256)
	first, _, err := Generate(p, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	existing := asExisting(first)
	caPair, err := ParseKeyPair(existing["_ca/ca.crt"], existing["_ca/ca.key"])
	if err != nil {
		t.Fatal(err)
	}
	leaves, _ := p.Leaves("cp1")
	i := slices.IndexFunc(leaves, func(l LeafSpec) bool { return l.Name == "apiserver" })
	spec := leaves[i]

	// A same-named certificate with another key usage: made by hand, as
	// Sign always uses kubeadm's.
	old, err := ParseKeyPair(existing["cp1/pki/apiserver.crt"], existing["cp1/pki/apiserver.key"])
	if err != nil {
		t.Fatal(err)
	}
	tmpl := *old.Cert
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.Subject = pkix.Name{CommonName: spec.CN}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, caPair.Cert, old.Key.Public(), caPair.Key)
	if err != nil {
		t.Fatal(err)
	}
	ku, _ := x509.ParseCertificate(der)
	// And one with server and client auth where kubeadm has server only.
	wide := spec
	wide.Usages = both
	eku, err := Sign(wide, old.Key.Public(), caPair, now, p.LeafValidity())
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"key usage", ku, "drifted from the cluster file: key usage DigitalSignature, want DigitalSignature,KeyEncipherment"},
		{"extended key usage", eku, "drifted from the cluster file: extended key usages [ServerAuth ClientAuth], want [ServerAuth]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := asExisting(first)
			ex["cp1/pki/apiserver.crt"] = CertPEM(tc.cert)
			files, actions, err := Generate(p, ex, now.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			v := byVerb(actions)
			if len(v[Reissued]) != 1 || v[Reissued]["cp1/pki/apiserver.crt"].Why != tc.want {
				t.Errorf("reissued %v, want apiserver.crt: %q", v[Reissued], tc.want)
			}
			c, _ := ParseCertPEM(files["cp1/pki/apiserver.crt"].Data)
			if d := Drift(c, spec); d != "" {
				t.Errorf("re-issued certificate still drifts: %s", d)
			}
			if string(files["cp1/pki/apiserver.key"].Data) == string(ex["cp1/pki/apiserver.key"]) {
				t.Error("re-issued with the old key; want a fresh one")
			}
		})
	}
}

// externalPlan is the lab cluster moved to external etcd on three hosts.
func externalPlan(alg string) *Plan {
	p := labPlan(alg)
	p.ExternalEtcd = true
	for i, a := range []string{"10.77.0.21", "10.77.0.22", "10.77.0.23"} {
		p.Hosts = append(p.Hosts, Host{Name: "etcd" + string(rune('1'+i)), Address: netip.MustParseAddr(a), Role: RoleEtcd})
	}
	return p
}

// TestStaleFilesRemoved: moving from stacked to external etcd removes the
// etcd CA key and member certificates from the control-plane hosts (and
// reports each), leaves files haplane does not know alone, and `Check`
// with the new plan flags the stale files until they are gone.
func TestStaleFilesRemoved(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	stacked, _, err := Generate(labPlan(ECDSAP256), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteTree(dir, stacked); err != nil {
		t.Fatal(err)
	}
	mine := []string{"cp1/pki/oidc-ca.crt", "cp1/kubelet.conf", "cp1/pki/etcd/notes.txt", "old-host/pki/ca.key"}
	for _, f := range mine {
		full := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("operator's\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	existing, err := ReadTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := externalPlan(ECDSAP256)
	beforeRemoval := map[string][]byte{}
	for k, v := range existing {
		if rel, ok := strings.CutPrefix(k, "cp1/"); ok && !slices.Contains(mine, k) {
			beforeRemoval[rel] = v
		}
	}

	files, actions, err := Generate(p, existing, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	v := byVerb(actions)
	var wantRemoved []string
	for _, h := range []string{"cp1", "cp2", "cp3"} {
		for _, f := range []string{"etcd/ca.key", "etcd/server.crt", "etcd/server.key", "etcd/peer.crt", "etcd/peer.key", "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key"} {
			wantRemoved = append(wantRemoved, path.Join(h, "pki", f))
		}
	}
	var gotRemoved []string
	for p, a := range v[Removed] {
		gotRemoved = append(gotRemoved, p)
		if !strings.Contains(a.Why, "not in the plan") {
			t.Errorf("%s removed because %q", p, a.Why)
		}
	}
	slices.Sort(gotRemoved)
	slices.Sort(wantRemoved)
	if !slices.Equal(gotRemoved, wantRemoved) {
		t.Errorf("removed:\n got %v\nwant %v", gotRemoved, wantRemoved)
	}
	if len(v[Reissued]) != 0 {
		t.Errorf("reissued %v; the control-plane leaves still match", v[Reissued])
	}

	// Check with the new plan, on cp1 as it was: the stale files fail it.
	bad := map[string]string{}
	for _, s := range Check(beforeRemoval, p, "cp1", now, 30*24*time.Hour) {
		if !s.OK() {
			bad[s.Name] = strings.Join(s.Problems, "; ")
		}
	}
	for _, n := range []string{"etcd/ca.key", "etcd/server", "etcd/peer", "etcd/healthcheck-client"} {
		if !strings.Contains(bad[n], "unexpected") {
			t.Errorf("check before removal: %s: %q, want unexpected", n, bad[n])
		}
	}
	if len(bad) != 4 {
		t.Errorf("check before removal: %v", bad)
	}

	if _, err := WriteTree(dir, files); err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveStale(dir, actions)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != len(wantRemoved) {
		t.Errorf("RemoveStale removed %v", removed)
	}
	after, err := ReadTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range wantRemoved {
		if _, ok := after[f]; ok {
			t.Errorf("%s is still there", f)
		}
	}
	for _, f := range mine {
		if string(after[f]) != "operator's\n" {
			t.Errorf("%s was touched", f)
		}
	}
	host := map[string][]byte{}
	for k, v := range after {
		if rel, ok := strings.CutPrefix(k, "cp1/"); ok && !slices.Contains(mine, k) {
			host[rel] = v
		}
	}
	for _, s := range Check(host, p, "cp1", now, 30*24*time.Hour) {
		if !s.OK() {
			t.Errorf("check after removal: %s: %v", s.Name, s.Problems)
		}
	}
	// Nothing left to remove on the next run.
	_, actions, err = Generate(p, after, now.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range actions {
		if a.Verb != Kept {
			t.Errorf("next run: %s %s: %s", a.Verb, a.Path, a.Why)
		}
	}
}

// TestKnownHostFilesCoverGenerate: every file Generate puts in a host folder,
// in either topology, is in KnownHostFiles, so a file of an earlier plan is
// always recognised as stale.
func TestKnownHostFilesCoverGenerate(t *testing.T) {
	for _, p := range []*Plan{labPlan(ECDSAP256), externalPlan(ECDSAP256)} {
		files, _, err := Generate(p, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for f := range files {
			host, rel, _ := strings.Cut(f, "/")
			if host != CADir && !slices.Contains(KnownHostFiles, rel) {
				t.Errorf("%s is not in KnownHostFiles", f)
			}
		}
	}
}

// TestCheckPlanSignerMissingCAAndDrift: with a plan, a leaf signed by
// another CA of the same folder is flagged (kubeadm's front-proxy CA signing
// an apiserver client certificate would let front-proxy clients in), a
// missing CA certificate is reported as missing, and SAN DRIFT says ok, "-"
// or what differs.
func TestCheckPlanSignerMissingCAAndDrift(t *testing.T) {
	now := time.Now()
	p := onePlan(ECDSAP256)
	files, _, err := Generate(p, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	host := hostTree(files, "cp1")
	status := func(st []CertStatus) map[string]CertStatus {
		m := map[string]CertStatus{}
		for _, s := range st {
			m[s.Name] = s
		}
		return m
	}
	warn := 30 * 24 * time.Hour
	fresh := status(Check(host, p, "cp1", now, warn))
	for n, s := range fresh {
		want := DriftOK
		if n == CA || n == FrontProxyCA || n == EtcdCA {
			want = DriftNotChecked
		}
		if s.SANDrift != want || !s.OK() {
			t.Errorf("fresh %s: drift %q (want %q), problems %v", n, s.SANDrift, want, s.Problems)
		}
	}
	for n, s := range status(Check(host, nil, "", now, warn)) {
		if s.SANDrift != DriftNotChecked || !s.OK() {
			t.Errorf("no plan %s: drift %q, problems %v", n, s.SANDrift, s.Problems)
		}
	}
	moved := onePlan(ECDSAP256)
	moved.Hosts[0].Address = netip.MustParseAddr("10.77.0.31")
	if d := status(Check(host, moved, "cp1", now, warn))["apiserver"].SANDrift; d != "IP SANs [10.96.0.1 10.77.0.11 10.77.0.100], want [10.96.0.1 10.77.0.31 10.77.0.100]" {
		t.Errorf("moved apiserver drift: %q", d)
	}

	// apiserver-kubelet-client signed by the front-proxy CA.
	fp, err := ParseKeyPair(files["_ca/front-proxy-ca.crt"].Data, files["_ca/front-proxy-ca.key"].Data)
	if err != nil {
		t.Fatal(err)
	}
	leaves, _ := p.Leaves("cp1")
	spec := leaves[slices.IndexFunc(leaves, func(l LeafSpec) bool { return l.Name == "apiserver-kubelet-client" })]
	key, _ := NewKey(ECDSAP256)
	wrong, err := Sign(spec, key.Public(), fp, now, p.LeafValidity())
	if err != nil {
		t.Fatal(err)
	}
	host["pki/apiserver-kubelet-client.crt"] = CertPEM(wrong)
	delete(host, "pki/etcd/ca.crt")
	got := status(Check(host, p, "cp1", now, warn))
	if s := got["apiserver-kubelet-client"]; s.ChainOK || s.CA != FrontProxyCA || strings.Join(s.Problems, "; ") != "signed by front-proxy-ca, the plan says ca" {
		t.Errorf("wrong signer: %+v", s)
	}
	if s, ok := got[EtcdCA]; !ok || strings.Join(s.Problems, "; ") != "missing" {
		t.Errorf("missing etcd CA: %+v (listed %v)", s, ok)
	}
	if s := got["etcd/server"]; s.ChainOK || s.CA != EtcdCA || strings.Join(s.Problems, "; ") != "cannot verify: its CA etcd/ca.crt is missing" {
		t.Errorf("leaf of the missing CA: %+v", s)
	}
	// Without a plan the same tree passes the chain test (some CA of the
	// folder signed it): the plan is what makes the check strict.
	if s := status(Check(host, nil, "", now, warn))["apiserver-kubelet-client"]; !s.ChainOK {
		t.Errorf("no plan: %+v", s)
	}
}
