package pki

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The golden files under testdata/kubeadm-v1.37.1/ describe what real
// kubeadm v1.37.1 writes for node cp1 (10.77.0.11) of a cluster "lab" with
// controlPlaneEndpoint 10.77.0.100:8443 and the default networking. They
// were produced by this test with
//
//	HAPLANE_K8S_BIN=$(tools/k8s/build.sh) go test ./internal/pki -run TestKubeadm -update
//
// which runs `kubeadm init phase certs all` and `kubeadm init phase
// kubeconfig all` on kubeadmConfig below and describes every file. Without
// -update, TestKubeadmGolden compares haplane's output with those files,
// and TestKubeadmLive (when HAPLANE_K8S_BIN is set, as in CI) compares it
// with a fresh kubeadm run.
var update = flag.Bool("update", false, "regenerate the kubeadm golden files (needs HAPLANE_K8S_BIN)")

const kubeadmConfig = `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  name: cp1
localAPIEndpoint:
  advertiseAddress: 10.77.0.11
  bindPort: 6443
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: lab
kubernetesVersion: v1.37.1
controlPlaneEndpoint: 10.77.0.100:8443
certificatesDir: CERTDIR
encryptionAlgorithm: ALGORITHM
networking:
  serviceSubnet: 10.96.0.0/12
  dnsDomain: cluster.local
apiServer:
  certSANs: [10.77.0.100]
`

// labPlan is the same cluster as haplane describes it.
func labPlan(alg string) *Plan {
	return &Plan{
		ClusterName:        "lab",
		EndpointHost:       "10.77.0.100",
		EndpointPort:       8443,
		APIServerPort:      6443,
		ExtraAPIServerSANs: []string{"10.77.0.100"},
		ServiceSubnet:      netip.MustParsePrefix("10.96.0.0/12"),
		DNSDomain:          "cluster.local",
		KeyAlgorithm:       alg,
		RenewBefore:        30 * 24 * time.Hour,
		Hosts: []Host{
			{Name: "cp1", Address: netip.MustParseAddr("10.77.0.11"), Role: RoleControlPlane},
			{Name: "cp2", Address: netip.MustParseAddr("10.77.0.12"), Role: RoleControlPlane},
			{Name: "cp3", Address: netip.MustParseAddr("10.77.0.13"), Role: RoleControlPlane},
		},
	}
}

// certFiles are the certificate-bearing files of a control-plane host,
// relative to /etc/kubernetes.
var certFiles = []string{
	"pki/ca.crt", "pki/front-proxy-ca.crt", "pki/etcd/ca.crt",
	"pki/apiserver.crt", "pki/apiserver-kubelet-client.crt", "pki/front-proxy-client.crt",
	"pki/etcd/server.crt", "pki/etcd/peer.crt", "pki/etcd/healthcheck-client.crt", "pki/apiserver-etcd-client.crt",
	"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf",
}

var keyFiles = []string{
	"pki/ca.key", "pki/front-proxy-ca.key", "pki/etcd/ca.key", "pki/sa.key", "pki/sa.pub",
	"pki/apiserver.key", "pki/apiserver-kubelet-client.key", "pki/front-proxy-client.key",
	"pki/etcd/server.key", "pki/etcd/peer.key", "pki/etcd/healthcheck-client.key", "pki/apiserver-etcd-client.key",
}

var kuNames = []struct {
	bit  x509.KeyUsage
	name string
}{
	{x509.KeyUsageDigitalSignature, "DigitalSignature"}, {x509.KeyUsageContentCommitment, "ContentCommitment"},
	{x509.KeyUsageKeyEncipherment, "KeyEncipherment"}, {x509.KeyUsageDataEncipherment, "DataEncipherment"},
	{x509.KeyUsageKeyAgreement, "KeyAgreement"}, {x509.KeyUsageCertSign, "CertSign"}, {x509.KeyUsageCRLSign, "CRLSign"},
}

var ekuNames = map[x509.ExtKeyUsage]string{x509.ExtKeyUsageServerAuth: "ServerAuth", x509.ExtKeyUsageClientAuth: "ClientAuth"}

// describe renders every field kubeadm compatibility is judged on; only
// the random parts (keys, serials, timestamps) are left out.
func describe(c *x509.Certificate) string {
	var ku []string
	for _, k := range kuNames {
		if c.KeyUsage&k.bit != 0 {
			ku = append(ku, k.name)
		}
	}
	var eku []string
	for _, e := range c.ExtKeyUsage {
		eku = append(eku, ekuNames[e])
	}
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	key := "unknown"
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		key = fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		key = "ECDSA-" + k.Curve.Params().Name
	}
	lines := []string{
		"subject: " + c.Subject.String(),
		"issuer: " + c.Issuer.String(),
		fmt.Sprintf("isCA: %v basicConstraintsValid: %v", c.IsCA, c.BasicConstraintsValid),
		"keyUsage: " + strings.Join(ku, ","),
		"extKeyUsage: " + strings.Join(eku, ","),
		"dns: " + strings.Join(c.DNSNames, ","),
		"ip: " + strings.Join(ips, ","),
		"validity: " + c.NotAfter.Sub(c.NotBefore).Round(time.Minute).String(),
		"key: " + key,
		"signature: " + c.SignatureAlgorithm.String(),
		fmt.Sprintf("subjectKeyId: %v authorityKeyId: %v", len(c.SubjectKeyId) > 0, len(c.AuthorityKeyId) > 0),
	}
	return strings.Join(lines, "\n") + "\n"
}

// describeTree describes a host tree (paths relative to /etc/kubernetes).
func describeTree(t *testing.T, files map[string][]byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range certFiles {
		data, ok := files[f]
		if !ok {
			t.Fatalf("%s missing", f)
		}
		if strings.HasSuffix(f, ".conf") {
			k, err := ParseKubeconfig(data)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			data = k.ClientCert
			out[f+".server"] = k.Server + "\n"
		}
		c, err := ParseCertPEM(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[f] = describe(c)
	}
	for _, f := range keyFiles {
		blk := strings.SplitN(string(files[f]), "\n", 2)[0]
		out[f+".pemtype"] = blk + "\n"
	}
	return out
}

// haplaneHost generates the lab plan and returns cp1's tree.
func haplaneHost(t *testing.T, alg string) map[string][]byte {
	t.Helper()
	files, _, err := Generate(labPlan(alg), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return hostTree(files, "cp1")
}

// runKubeadm runs the real kubeadm and returns its tree for cp1.
func runKubeadm(t *testing.T, bin, alg string) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	algName := map[string]string{RSA2048: "RSA-2048", ECDSAP256: "ECDSA-P256"}[alg]
	cfg := strings.NewReplacer("CERTDIR", filepath.Join(dir, "pki"), "ALGORITHM", algName).Replace(kubeadmConfig)
	cfgPath := filepath.Join(dir, "kubeadm.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	kubeadm := filepath.Join(bin, "kubeadm")
	for _, args := range [][]string{
		{"init", "phase", "certs", "all", "--config", cfgPath},
		{"init", "phase", "kubeconfig", "all", "--config", cfgPath, "--kubeconfig-dir", dir},
	} {
		if out, err := exec.Command(kubeadm, args...).CombinedOutput(); err != nil {
			t.Fatalf("kubeadm %v: %v\n%s", args, err, out)
		}
	}
	tree, err := ReadTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func goldenDir(alg string) string { return filepath.Join("testdata", "kubeadm-v1.37.1", alg) }

func TestKubeadmGolden(t *testing.T) {
	for _, alg := range []string{RSA2048, ECDSAP256} {
		t.Run(alg, func(t *testing.T) {
			if *update {
				bin := os.Getenv("HAPLANE_K8S_BIN")
				if bin == "" {
					t.Fatal("-update needs HAPLANE_K8S_BIN: the goldens come from real kubeadm")
				}
				for name, d := range describeTree(t, runKubeadm(t, bin, alg)) {
					p := filepath.Join(goldenDir(alg), name+".txt")
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, []byte(d), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := describeTree(t, haplaneHost(t, alg))
			for name, d := range got {
				want, err := os.ReadFile(filepath.Join(goldenDir(alg), name+".txt"))
				if err != nil {
					t.Fatalf("golden for %s: %v", name, err)
				}
				if d != string(want) {
					t.Errorf("%s differs from kubeadm v1.37.1:\n--- haplane\n%s--- kubeadm\n%s", name, d, want)
				}
			}
		})
	}
}

// TestKubeadmLive compares with a fresh run of real kubeadm, so a kubeadm
// change the goldens missed is caught. CI sets HAPLANE_K8S_BIN.
func TestKubeadmLive(t *testing.T) {
	bin := os.Getenv("HAPLANE_K8S_BIN")
	if bin == "" {
		t.Skip("HAPLANE_K8S_BIN is not set: build kubeadm with tools/k8s/build.sh and point HAPLANE_K8S_BIN at its folder to compare with real kubeadm")
	}
	for _, alg := range []string{RSA2048, ECDSAP256} {
		want := describeTree(t, runKubeadm(t, bin, alg))
		got := describeTree(t, haplaneHost(t, alg))
		for name := range want {
			if got[name] != want[name] {
				t.Errorf("%s %s differs from live kubeadm:\n--- haplane\n%s--- kubeadm\n%s", alg, name, got[name], want[name])
			}
		}
	}
}

func TestTreeLayoutModesAndChains(t *testing.T) {
	dir := t.TempDir()
	p := labPlan(RSA2048)
	p.ExternalEtcd = true
	p.Hosts = append(p.Hosts, Host{Name: "etcd1", Address: netip.MustParseAddr("10.77.0.21"), Role: RoleEtcd})
	files, _, err := Generate(p, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteTree(dir, files); err != nil {
		t.Fatal(err)
	}
	tree, err := ReadTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	roots := map[string]*x509.CertPool{}
	for _, ca := range CAs {
		c, err := ParseCertPEM(tree[path.Join(CADir, ca.Name+".crt")])
		if err != nil {
			t.Fatal(err)
		}
		roots[ca.Name] = x509.NewCertPool()
		roots[ca.Name].AddCert(c)
	}
	for rel := range files {
		info, err := os.Stat(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		secret := strings.HasSuffix(rel, ".key") || strings.HasSuffix(rel, ".conf") || strings.HasSuffix(rel, "sa.pub")
		if secret && info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", rel, info.Mode().Perm())
		}
	}
	// Every leaf of every host chains to its CA.
	for _, h := range p.Hosts {
		leaves, _ := p.Leaves(h.Name)
		for _, l := range leaves {
			c, err := ParseCertPEM(tree[path.Join(h.Name, "pki", l.Name+".crt")])
			if err != nil {
				t.Fatalf("%s/%s: %v", h.Name, l.Name, err)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots[l.CA], KeyUsages: l.Usages}); err != nil {
				t.Errorf("%s/%s does not verify against %s: %v", h.Name, l.Name, l.CA, err)
			}
		}
	}
	// External topology: etcd hosts get no CA key, control-plane hosts no
	// etcd member certificates and no etcd CA key.
	for _, f := range []string{"etcd1/pki/etcd/ca.key", "etcd1/pki/ca.key", "etcd1/pki/ca.crt", "cp1/pki/etcd/ca.key", "cp1/pki/etcd/server.crt"} {
		if _, ok := tree[f]; ok {
			t.Errorf("%s exists; it must not", f)
		}
	}
	for _, f := range []string{"etcd1/pki/etcd/ca.crt", "etcd1/pki/etcd/server.crt", "etcd1/pki/etcd/peer.crt", "cp1/pki/etcd/ca.crt", "cp1/pki/apiserver-etcd-client.crt", "_ca/etcd/ca.key"} {
		if _, ok := tree[f]; !ok {
			t.Errorf("%s is missing", f)
		}
	}
}

func TestRerunKeepsDriftReissues(t *testing.T) {
	p := labPlan(ECDSAP256)
	now := time.Now()
	first, _, err := Generate(p, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	existing := asExisting(first)
	// Same plan: everything kept, byte for byte.
	second, actions, err := Generate(p, existing, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range actions {
		if a.Verb != "kept" {
			t.Errorf("re-run %s %s: %s", a.Verb, a.Path, a.Why)
		}
	}
	for k, f := range second {
		if string(f.Data) != string(existing[k]) {
			t.Errorf("re-run changed %s", k)
		}
	}
	// cp2 moves: its address-bearing leaves drift and are reissued; the CAs
	// and everyone else's certificates stay.
	p.Hosts[1].Address = netip.MustParseAddr("10.77.0.22")
	_, actions, err = Generate(p, existing, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	reissued := map[string]string{}
	for _, a := range actions {
		if a.Verb == "reissued" {
			reissued[a.Path] = a.Why
		}
	}
	for _, want := range []string{"cp2/pki/apiserver.crt", "cp2/pki/etcd/server.crt", "cp2/pki/etcd/peer.crt", "cp2/controller-manager.conf", "cp2/scheduler.conf"} {
		if !strings.Contains(reissued[want], "drifted") && !strings.Contains(reissued[want], "server") {
			t.Errorf("%s not reissued for drift: %q", want, reissued[want])
		}
	}
	if len(reissued) != 5 {
		t.Errorf("reissued %v, want only cp2's five address-bearing files", reissued)
	}
	// Inside the renewal window: reissued.
	_, actions, err = Generate(labPlan(ECDSAP256), existing, now.Add(340*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range actions {
		if a.Verb == "reissued" && strings.Contains(a.Why, "renewal window") {
			n++
		}
	}
	if n != 3*(7+4) {
		t.Errorf("%d leaves renewed in the window, want %d", n, 3*(7+4))
	}
}

func TestCheckFindsProblems(t *testing.T) {
	p := labPlan(ECDSAP256)
	now := time.Now()
	files, _, err := Generate(p, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	host := hostTree(files, "cp1")
	for _, s := range Check(host, p, "cp1", now, 30*24*time.Hour) {
		if !s.OK() {
			t.Errorf("fresh tree: %s: %v", s.Name, s.Problems)
		}
	}
	// Expiring soon, drifted, foreign, missing.
	problems := func(st []CertStatus) map[string]string {
		m := map[string]string{}
		for _, s := range st {
			if !s.OK() {
				m[s.Name] = strings.Join(s.Problems, "; ")
			}
		}
		return m
	}
	got := problems(Check(host, p, "cp1", now.Add(350*24*time.Hour), 30*24*time.Hour))
	if len(got) != 11 || !strings.Contains(got["apiserver"], "expires within") {
		t.Errorf("near expiry: %v", got)
	}
	moved := labPlan(ECDSAP256)
	moved.Hosts[0].Address = netip.MustParseAddr("10.77.0.31")
	got = problems(Check(host, moved, "cp1", now, 30*24*time.Hour))
	if !strings.Contains(got["apiserver"], "drifted") || !strings.Contains(got["etcd/peer"], "drifted") {
		t.Errorf("drift: %v", got)
	}
	other, _, _ := Generate(labPlan(ECDSAP256), nil, now)
	host["pki/apiserver.crt"] = other["cp1/pki/apiserver.crt"].Data
	delete(host, "pki/etcd/peer.crt")
	got = problems(Check(host, p, "cp1", now, 30*24*time.Hour))
	if !strings.Contains(got["apiserver"], "does not chain") || got["etcd/peer"] != "missing" {
		t.Errorf("foreign and missing: %v", got)
	}
}
