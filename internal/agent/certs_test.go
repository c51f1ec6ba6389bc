package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
)

// shortPKI writes the PKI of control-plane nodes cp1, cp2, ... at addrs
// behind endpoint, issued at issued with the given validity, into a
// temporary tree (every CA key in every node's folder) and returns the plan
// and the tree's root.
func shortPKI(t *testing.T, issued time.Time, validity, renewBefore time.Duration, endpoint string, addrs ...string) (*pki.Plan, string) {
	t.Helper()
	p := &pki.Plan{ClusterName: "lab", EndpointHost: endpoint, EndpointPort: 8443, APIServerPort: 6443,
		ServiceSubnet: netip.MustParsePrefix("10.96.0.0/12"), DNSDomain: "cluster.local", KeyAlgorithm: "ecdsa-p256",
		Validity: validity, CAValidity: 3650 * 24 * time.Hour, RenewBefore: renewBefore}
	for i, a := range addrs {
		p.Hosts = append(p.Hosts, pki.Host{Name: fmt.Sprintf("cp%d", i+1), Address: netip.MustParseAddr(a), Role: pki.RoleControlPlane})
	}
	files, _, err := pki.Generate(p, nil, issued)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if _, err := pki.WriteTree(root, files); err != nil {
		t.Fatal(err)
	}
	return p, root
}

// restartLog records restarts, in order.
type restartLog struct {
	mu   sync.Mutex
	done []string
}

func (r *restartLog) Restart(_ context.Context, c string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = append(r.done, c)
	return nil
}

func (r *restartLog) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.done)
}

// servedNotAfter returns a function that makes one request to url over a
// fresh TLS connection (roots from caFile, client certificate
// certFile/keyFile) and returns when the certificate the server presented
// expires: a fresh connection each time, so that each request sees the
// pair the server holds at that moment.
func servedNotAfter(t *testing.T, url, serverName, caFile, certFile, keyFile string) func() (time.Time, error) {
	t.Helper()
	roots, err := LoadCertPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	client, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName, Certificates: []tls.Certificate{client}}}}
	t.Cleanup(hc.CloseIdleConnections)
	return func() (time.Time, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return time.Time{}, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return time.Time{}, fmt.Errorf("status %s", resp.Status)
		}
		return resp.TLS.PeerCertificates[0].NotAfter, nil
	}
}

// watchRoll makes requests with get while the certificate what rolls, and
// fails the test if any request fails or the served certificate does not
// change (expire after first). Bounded: at most 3000 requests or 30s; it
// stops 100 requests after the change. It returns the last expiry served.
func watchRoll(t *testing.T, what string, get func() (time.Time, error), first time.Time) time.Time {
	t.Helper()
	var ok, failed, afterChange int
	var last time.Time
	var errs []string
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < 3000 && time.Now().Before(deadline) && afterChange < 100; i++ {
		na, err := get()
		if err != nil {
			failed++
			if len(errs) < 5 {
				errs = append(errs, err.Error())
			}
			continue
		}
		ok++
		last = na
		if na.After(first) {
			afterChange++
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%s: %d requests ok, %d failed; served NotAfter %s -> %s", what, ok, failed, first.Format(time.TimeOnly), last.Format(time.TimeOnly))
	if failed != 0 {
		t.Errorf("%d requests failed while %s rolled: %v", failed, what, errs)
	}
	if !last.After(first) {
		t.Fatalf("%s served still expires %s after 30s", what, last)
	}
	return last
}

func startJoinPart(t *testing.T, pkiDir string, srv *join.Server) string {
	t.Helper()
	jp := &JoinPart{Addr: "127.0.0.1:0", PKIDir: pkiDir, Server: srv, Log: slog.New(slog.DiscardHandler),
		AgentStatus: func() any { return map[string]string{"ok": "yes"} }}
	if err := jp.Start(context.Background(), func(err error) { t.Errorf("join part failed: %v", err) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = jp.Stop(context.Background()) })
	return jp.Status().(map[string]string)["listen"]
}

func startCerts(t *testing.T, cfg CertsConfig) *CertsPart {
	t.Helper()
	p, err := NewCertsPart(cfg)
	if err != nil {
		t.Fatal(err)
	}
	startPart(t, p, func(err error) { t.Errorf("certs part failed: %v", err) }, 10*time.Second)
	return p
}

// startPart starts p, which reports a later failure to failed, and stops
// it within stopWithin at the end of the test.
func startPart(t *testing.T, p Part, failed func(error), stopWithin time.Duration) {
	t.Helper()
	if err := p.Start(context.Background(), failed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopWithin)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("stop %s: %v", p.Name(), err)
		}
	})
}

// TestRenewalWhileServing: leaves that expire within about a minute are
// renewed by the agent's certs part while a client makes requests over
// fresh TLS connections to the agent's join server, which serves the
// apiserver certificate: no request fails, the served certificate's expiry
// moves, the key file is untouched, the old certificate is kept as .bak,
// the metrics say so, and the two components that read kubeconfigs at
// start only are restarted, in order.
func TestRenewalWhileServing(t *testing.T) {
	// Issued 55s ago for 2m, renewed within 1m of expiry: due in ~5s.
	plan, root := shortPKI(t, time.Now().Add(-55*time.Second), 2*time.Minute, time.Minute, "127.0.0.1", "127.0.0.1")
	pkiDir := filepath.Join(root, "cp1", "pki")
	keyBefore, _ := os.ReadFile(filepath.Join(pkiDir, "apiserver.key"))
	addr := startJoinPart(t, pkiDir, &join.Server{Cluster: "lab"})

	get := servedNotAfter(t, "https://"+addr+PeerStatusPath, "127.0.0.1", filepath.Join(pkiDir, "ca.crt"),
		filepath.Join(pkiDir, "apiserver-kubelet-client.crt"), filepath.Join(pkiDir, "apiserver-kubelet-client.key"))
	first, err := get()
	if err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	restarts := &restartLog{}
	cp := startCerts(t, CertsConfig{Node: "cp1", PKIDir: pkiDir, Plan: func() (*pki.Plan, error) { return plan, nil }, Cluster: "lab",
		Interval: 300 * time.Millisecond, Restarter: restarts, Registerer: reg})

	last := watchRoll(t, "the apiserver certificate", get, first)
	if !last.After(time.Now().Add(time.Minute + 30*time.Second)) {
		t.Errorf("the renewed certificate expires %s: not a fresh 2m validity", last)
	}
	keyAfter, _ := os.ReadFile(filepath.Join(pkiDir, "apiserver.key"))
	if !bytes.Equal(keyBefore, keyAfter) {
		t.Error("the renewal replaced the key file")
	}
	bak, err := os.ReadFile(filepath.Join(pkiDir, "apiserver.crt.bak"))
	if err != nil {
		t.Fatalf("no backup of the old certificate: %v", err)
	}
	if old, _ := pki.ParseCertPEM(bak); old == nil || !old.NotAfter.Equal(first) {
		t.Errorf("the backup is not the certificate served first")
	}
	if n := testutil.ToFloat64(cp.renewals.WithLabelValues("apiserver", "ok")); n < 1 {
		t.Errorf("haplane_cert_renewals_total{cert=apiserver,result=ok} = %v", n)
	}
	if left := testutil.ToFloat64(cp.expiry.WithLabelValues("apiserver")); left < 90 {
		t.Errorf("haplane_cert_expiry_seconds{cert=apiserver} = %v after renewal", left)
	}
	if got := restarts.list(); len(got) < 2 || got[0] != KubeControllerManager || got[1] != KubeScheduler {
		t.Errorf("restarts %v, want %s then %s", got, KubeControllerManager, KubeScheduler)
	}
	st := cp.Status().(CertsStatus)
	if st.LastError != "" || len(st.Certificates) != 11 || st.LastRenewal.IsZero() {
		t.Errorf("status: error %q, %d certificates, last renewal %s", st.LastError, len(st.Certificates), st.LastRenewal)
	}
	for _, c := range st.Certificates {
		if c.SecondsLeft < 60 || math.Abs(c.DaysLeft*86400-float64(c.SecondsLeft)) > 1 {
			t.Errorf("%s: %d s / %.1f days left after the renewal", c.Name, c.SecondsLeft, c.DaysLeft)
		}
	}
}

// TestRenewalThroughPeer: a node that holds no CA key gets every one of
// its leaves renewed by a peer over the real join channel (TLS to the
// peer's join server, proof of possession), for the same keys, and writes
// them with backups; a check right after finds nothing due.
func TestRenewalThroughPeer(t *testing.T) {
	// Issued 10m ago for 1h; renewed within 55m of expiry: all due now.
	plan, root := shortPKI(t, time.Now().Add(-10*time.Minute), time.Hour, 55*time.Minute, "127.0.0.1", "127.0.0.1", "10.77.9.2")
	cp1, cp2 := filepath.Join(root, "cp1", "pki"), filepath.Join(root, "cp2", "pki")
	for _, k := range []string{"ca.key", "front-proxy-ca.key", "etcd/ca.key", "sa.key"} {
		if err := os.Remove(filepath.Join(cp2, k)); err != nil {
			t.Fatal(err)
		}
	}
	planFn := func() (*pki.Plan, error) { return plan, nil }
	addr := startJoinPart(t, cp1, &join.Server{Cluster: "lab", Renewer: &PKIRenewer{Plan: planFn, PKIDir: cp1}})

	before, _ := pki.ReadTree(filepath.Join(root, "cp2"))
	cp, err := NewCertsPart(CertsConfig{Node: "cp2", PKIDir: cp2, Plan: planFn, Cluster: "lab", Interval: time.Hour,
		// The first peer answers nothing: the next one is asked.
		Peers: []string{"127.0.0.1:1", addr}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	after, _ := pki.ReadTree(filepath.Join(root, "cp2"))
	held, err := pki.Inventory(plan, "cp2", after)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 11 {
		t.Fatalf("cp2 holds %d leaves, want 11", len(held))
	}
	cas := map[string]*x509.Certificate{}
	for _, n := range []string{"ca", "front-proxy-ca", "etcd/ca"} {
		cas[n], _ = pki.ParseCertPEM(after["pki/"+n+".crt"])
	}
	for _, h := range held {
		if left := time.Until(h.NotAfter); left < 55*time.Minute {
			t.Errorf("%s not renewed: %s left", h.Name, left.Round(time.Second))
		}
		if _, ok := after[h.File+".bak"]; !ok {
			t.Errorf("%s: no backup", h.Name)
		}
		var oldCert, newCert *x509.Certificate
		if h.Kubeconfig {
			ko, _ := pki.ParseKubeconfig(before[h.File])
			kn, err := pki.ParseKubeconfig(after[h.File])
			if err != nil {
				t.Fatalf("%s: %v", h.Name, err)
			}
			if !bytes.Equal(ko.ClientKey, kn.ClientKey) || ko.Server != kn.Server {
				t.Errorf("%s: key or server changed", h.Name)
			}
			oldCert, _ = pki.ParseCertPEM(ko.ClientCert)
			newCert, _ = pki.ParseCertPEM(kn.ClientCert)
		} else {
			key := strings.TrimSuffix(h.File, ".crt") + ".key"
			if !bytes.Equal(before[key], after[key]) {
				t.Errorf("%s: key file changed", h.Name)
			}
			oldCert, _ = pki.ParseCertPEM(before[h.File])
			newCert, _ = pki.ParseCertPEM(after[h.File])
		}
		if newCert.CheckSignatureFrom(cas[h.CA]) != nil {
			t.Errorf("%s: not signed by %s", h.Name, h.CA)
		}
		if newCert.Subject.String() != oldCert.Subject.String() || !slices.Equal(newCert.DNSNames, oldCert.DNSNames) {
			t.Errorf("%s: names changed: %s %v -> %s %v", h.Name, oldCert.Subject, oldCert.DNSNames, newCert.Subject, newCert.DNSNames)
		}
	}
	st := cp.Status().(CertsStatus)
	if len(st.Renewed) != 11 || st.LastError != "" {
		t.Errorf("status: renewed %v, error %q", st.Renewed, st.LastError)
	}
	// Nothing to restart here, so they are pending.
	if !slices.Equal(st.PendingRestarts, []string{KubeControllerManager, KubeScheduler}) {
		t.Errorf("pending restarts %v", st.PendingRestarts)
	}
	// Nothing due any more: a second check writes nothing.
	if err := cp.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, _ := pki.ReadTree(filepath.Join(root, "cp2"))
	if !bytes.Equal(again["pki/apiserver.crt"], after["pki/apiserver.crt"]) {
		t.Error("a second check renewed again")
	}
}

// TestRenewalRefusedWithoutPeer: a node without the CA key and without a
// peer says so, changes nothing, and the failure shows in the metrics.
func TestRenewalRefusedWithoutPeer(t *testing.T) {
	plan, root := shortPKI(t, time.Now().Add(-10*time.Minute), time.Hour, 55*time.Minute, "127.0.0.1", "127.0.0.1")
	pkiDir := filepath.Join(root, "cp1", "pki")
	for _, k := range []string{"ca.key", "front-proxy-ca.key", "etcd/ca.key"} {
		if err := os.Remove(filepath.Join(pkiDir, k)); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := pki.ReadTree(filepath.Join(root, "cp1"))
	cp, err := NewCertsPart(CertsConfig{Node: "cp1", PKIDir: pkiDir, Plan: func() (*pki.Plan, error) { return plan, nil }})
	if err != nil {
		t.Fatal(err)
	}
	err = cp.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "holds no CA key") || !strings.Contains(err.Error(), "no peer to ask") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Check = %q, want one line saying there is no CA key and no peer", err)
	}
	t.Logf("refusal: %v", err)
	after, _ := pki.ReadTree(filepath.Join(root, "cp1"))
	if len(after) != len(before) {
		t.Errorf("a refused renewal changed the tree: %d files, was %d", len(after), len(before))
	}
	for f, v := range before {
		if !bytes.Equal(after[f], v) {
			t.Errorf("%s changed", f)
		}
	}
	if testutil.ToFloat64(cp.failing) != 1 || testutil.ToFloat64(cp.renewals.WithLabelValues("apiserver", "error")) != 1 {
		t.Error("the failure is not in the metrics")
	}
}

func TestRestartsFor(t *testing.T) {
	for _, tc := range []struct {
		renewed []string
		want    []string
	}{
		{nil, nil},
		{[]string{"apiserver", "etcd/peer", "admin.conf"}, nil},
		{[]string{"scheduler.conf", "apiserver"}, []string{KubeScheduler}},
		{[]string{"scheduler.conf", "controller-manager.conf"}, []string{KubeControllerManager, KubeScheduler}},
	} {
		if got := restartsFor(tc.renewed); !slices.Equal(got, tc.want) {
			t.Errorf("restartsFor(%v) = %v, want %v", tc.renewed, got, tc.want)
		}
	}
	// Every leaf kubeadm writes has its readers written down.
	p := &pki.Plan{ClusterName: "x", EndpointHost: "10.0.0.1", EndpointPort: 1, APIServerPort: 1, ServiceSubnet: netip.MustParsePrefix("10.96.0.0/12"),
		DNSDomain: "d", Hosts: []pki.Host{{Name: "a", Address: netip.MustParseAddr("10.0.0.2"), Role: pki.RoleControlPlane}}}
	leaves, _ := p.Leaves("a")
	for _, l := range leaves {
		if len(CertReaders(l.Name)) == 0 {
			t.Errorf("no reader listed for %s", l.Name)
		}
	}
	for _, kc := range p.Kubeconfigs("a") {
		if len(CertReaders(kc.File)) == 0 {
			t.Errorf("no reader listed for %s", kc.File)
		}
	}
}

// TestRenewalEtcdMember: a real etcd member (embed, the agent's etcd part)
// serves its etcd/server certificate while the certs part renews it; a
// client making requests over fresh TLS connections to the member's client
// port sees no failure and, after the renewal, the new certificate: etcd
// reads the pair at each handshake, so no restart is needed.
func TestRenewalEtcdMember(t *testing.T) {
	addr := "127.0.77.41"
	plan, root := shortPKI(t, time.Now().Add(-55*time.Second), 2*time.Minute, time.Minute, "127.0.77.141", addr)
	pkiDir := filepath.Join(root, "cp1", "pki")
	c := &config.Cluster{Name: "renew", ControlPlaneEndpoint: config.Endpoint{VIP: "127.0.77.141"}, Nodes: []config.Node{{Name: "cp1", Address: addr}}}
	c.SetDefaults()
	part := startEtcdPart(t, c, pkiDir, filepath.Join(root, "data"), nil, func(err error) { t.Errorf("etcd part failed: %v", err) })
	for deadline := time.Now().Add(60 * time.Second); !part.Ready(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("etcd member not ready after 60s")
		}
	}

	url := "https://" + addr + ":" + fmt.Sprint(c.Etcd.ClientPort) + "/health"
	get := servedNotAfter(t, url, addr, filepath.Join(pkiDir, "etcd", "ca.crt"),
		filepath.Join(pkiDir, "etcd", "healthcheck-client.crt"), filepath.Join(pkiDir, "etcd", "healthcheck-client.key"))
	first, err := get()
	if err != nil {
		t.Fatal(err)
	}
	startCerts(t, CertsConfig{Node: "cp1", PKIDir: pkiDir, Plan: func() (*pki.Plan, error) { return plan, nil }, Interval: 300 * time.Millisecond})

	watchRoll(t, "etcd's server certificate", get, first)
}
