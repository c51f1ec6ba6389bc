package pki

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	held := func(name string, left time.Duration) Held {
		return Held{Name: name, File: "pki/" + name + ".crt", NotAfter: now.Add(left)}
	}
	for _, tc := range []struct {
		name        string
		held        []Held
		renewBefore time.Duration
		delay       time.Duration
		want        []string
	}{
		{"nothing held", nil, 30 * day, 0, nil},
		{"all far from expiry", []Held{held("apiserver", 300*day), held("etcd/peer", 200*day)}, 30 * day, 0, nil},
		{"one inside the window", []Held{held("apiserver", 300*day), held("etcd/peer", 29*day)}, 30 * day, 0, []string{"etcd/peer"}},
		{"exactly at the window's edge is not due yet", []Held{held("apiserver", 30*day)}, 30 * day, 0, nil},
		{"expired ones are due, first", []Held{held("apiserver", 10*day), held("admin.conf", -time.Hour)}, 30 * day, 0, []string{"admin.conf", "apiserver"}},
		{"most urgent first", []Held{held("b", 20*day), held("a", 25*day), held("c", 5*day)}, 30 * day, 0, []string{"c", "b", "a"}},
		{"same expiry: by name", []Held{held("scheduler.conf", 1*day), held("admin.conf", 1*day), held("apiserver", 1*day)}, 30 * day, 0,
			[]string{"admin.conf", "apiserver", "scheduler.conf"}},
		{"a later node waits its delay", []Held{held("apiserver", 29*day)}, 30 * day, 2 * day, nil},
		{"and renews once past it", []Held{held("apiserver", 27*day)}, 30 * day, 2 * day, []string{"apiserver"}},
		{"minutes-long lab certificates", []Held{held("apiserver", 90*time.Second), held("etcd/server", 3*time.Minute)}, 2 * time.Minute, 0, []string{"apiserver"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, h := range Due(tc.held, now, tc.renewBefore, tc.delay) {
				got = append(got, h.Name)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("Due = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRenewalDelay(t *testing.T) {
	for _, tc := range []struct {
		rank                 int
		stagger, renewBefore time.Duration
		want                 time.Duration
	}{
		{0, time.Hour, 720 * time.Hour, 0},
		{1, time.Hour, 720 * time.Hour, time.Hour},
		{4, time.Hour, 720 * time.Hour, 4 * time.Hour},
		// Never past half the window: the last node still renews in time.
		{8, time.Minute, 2 * time.Minute, time.Minute},
		{-1, time.Hour, 720 * time.Hour, 0},
	} {
		if got := RenewalDelay(tc.rank, tc.stagger, tc.renewBefore); got != tc.want {
			t.Errorf("RenewalDelay(%d, %s, %s) = %s, want %s", tc.rank, tc.stagger, tc.renewBefore, got, tc.want)
		}
	}
}

// TestInventoryAndRenew: the inventory of a generated host lists every leaf
// and kubeconfig; renewing one keeps its key, names and CA and moves its
// expiry; a kubeconfig's renewal keeps its embedded key.
func TestInventoryAndRenew(t *testing.T) {
	p := labPlan(ECDSAP256)
	p.Validity = time.Hour
	p.RenewBefore = 10 * time.Minute
	t0 := time.Now()
	files, _, err := Generate(p, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	host := hostTree(files, "cp1")
	held, err := Inventory(p, "cp1", host)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range held {
		names = append(names, h.Name)
	}
	want := "apiserver,apiserver-kubelet-client,front-proxy-client,etcd/server,etcd/peer,etcd/healthcheck-client,apiserver-etcd-client,admin.conf,super-admin.conf,controller-manager.conf,scheduler.conf"
	if strings.Join(names, ",") != want {
		t.Fatalf("inventory %v\nwant %s", names, want)
	}
	if d := Due(held, t0.Add(49*time.Minute), p.RenewBefore, 0); len(d) != 0 {
		t.Errorf("due at 49m of 1h with a 10m window: %v", d)
	}
	if d := Due(held, t0.Add(51*time.Minute), p.RenewBefore, 0); len(d) != len(held) {
		t.Errorf("due at 51m: %d of %d", len(d), len(held))
	}

	ca, err := ParseKeyPair(files["_ca/ca.crt"].Data, files["_ca/ca.key"].Data)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := ParseCertPEM(host["pki/apiserver.crt"])
	spec, err := p.LeafSpecFor("cp1", "apiserver")
	if err != nil {
		t.Fatal(err)
	}
	later := t0.Add(55 * time.Minute)
	nc, err := Renew(spec, old, ca, later, p.LeafValidity())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(nc.RawSubjectPublicKeyInfo, old.RawSubjectPublicKeyInfo) {
		t.Error("renewal changed the key")
	}
	if d := Drift(nc, spec); d != "" {
		t.Errorf("renewed certificate drifted: %s", d)
	}
	if !nc.NotAfter.After(old.NotAfter) || nc.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Errorf("renewed: NotAfter %s (old %s), serial %s (old %s)", nc.NotAfter, old.NotAfter, nc.SerialNumber, old.SerialNumber)
	}
	if _, err := ParseKeyPair(CertPEM(nc), host["pki/apiserver.key"]); err != nil {
		t.Errorf("the key on disk does not fit the renewed certificate: %v", err)
	}
	// Another CA's leaf is refused, not silently re-chained.
	etcdOld, _ := ParseCertPEM(host["pki/etcd/peer.crt"])
	etcdSpec, _ := p.LeafSpecFor("cp1", "etcd/peer")
	if _, err := Renew(etcdSpec, etcdOld, ca, later, time.Hour); err == nil || !strings.Contains(err.Error(), "not signed by the current") {
		t.Errorf("renewing an etcd leaf with the cluster CA: %v", err)
	}

	kc, _ := p.KubeconfigSpecFor("cp1", "scheduler.conf")
	data, err := RenewKubeconfig(p, kc, host["scheduler.conf"], ca, later)
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := ParseKubeconfig(host["scheduler.conf"])
	k2, err := ParseKubeconfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1.ClientKey, k2.ClientKey) || k1.Server != k2.Server {
		t.Error("kubeconfig renewal changed the key or server")
	}
	c2, _ := ParseCertPEM(k2.ClientCert)
	if !c2.NotAfter.After(old.NotAfter) || c2.Subject.CommonName != "system:kube-scheduler" {
		t.Errorf("renewed scheduler.conf: CN %s, NotAfter %s", c2.Subject.CommonName, c2.NotAfter)
	}
}

func TestWriteWithBackup(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "pki")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "apiserver.crt")
	if err := WriteWithBackup(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p + ".bak"); !os.IsNotExist(err) {
		t.Errorf("a first write left a backup: %v", err)
	}
	if err := WriteWithBackup(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	bak, _ := os.ReadFile(p + ".bak")
	if string(got) != "two" || string(bak) != "one" {
		t.Errorf("file %q, backup %q", got, bak)
	}
	if st, _ := os.Stat(p + ".bak"); st.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v, want the file's 0600", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("folder holds %d entries, want the file and its backup", len(ents))
	}
	// A backup is not a certificate to a reader of the tree.
	tree, _ := ReadTree(root)
	st := Check(tree, nil, "cp1", time.Now(), 0)
	if len(st) != 1 {
		t.Errorf("pki check lists %d entries, want the certificate alone: %+v", len(st), st)
	}
	for _, s := range st {
		if strings.Contains(s.Name, "bak") {
			t.Errorf("pki check lists the backup %s", s.Name)
		}
	}
}
