package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/stubapi"
	"github.com/haplane/haplane/internal/testutil/testbuf"
)

func TestMayEnterMaintenance(t *testing.T) {
	ready := func(n string) APIServerView { return APIServerView{Node: n, Ready: true} }
	three := []APIServerView{ready("cp1"), ready("cp2"), ready("cp3")}
	etcd3 := []EtcdMemberView{{Name: "cp1", Voter: true, Healthy: true}, {Name: "cp2", Voter: true, Healthy: true}, {Name: "cp3", Voter: true, Healthy: true}}
	with := func(ms []EtcdMemberView, f func([]EtcdMemberView)) []EtcdMemberView {
		out := append([]EtcdMemberView(nil), ms...)
		f(out)
		return out
	}
	for _, tc := range []struct {
		name string
		v    MaintenanceView
		want string // "" allowed, else a part of the refusal
	}{
		{"healthy three nodes", MaintenanceView{Node: "cp1", APIServers: three, EtcdMember: true, Etcd: etcd3}, ""},
		{"already in maintenance", MaintenanceView{Node: "cp1", Active: true, APIServers: three}, "cp1 is in maintenance already"},
		{"no health checks", MaintenanceView{Node: "cp1"}, "cannot tell whether another one is ready"},
		{"only node", MaintenanceView{Node: "cp1", APIServers: []APIServerView{ready("cp1")}}, "it is the only control-plane node"},
		{"others not ready", MaintenanceView{Node: "cp1", APIServers: []APIServerView{ready("cp1"), {Node: "cp2"}, {Node: "cp3", Ready: true, Maintenance: true}}},
			"no other kube-apiserver is ready (cp2 not ready, cp3 in maintenance)"},
		{"one other ready is enough", MaintenanceView{Node: "cp1", APIServers: []APIServerView{{Node: "cp1"}, {Node: "cp2"}, ready("cp3")}}, ""},
		{"not an etcd member", MaintenanceView{Node: "cp1", APIServers: three}, ""},
		{"etcd unreadable", MaintenanceView{Node: "cp1", APIServers: three, EtcdMember: true, EtcdErr: "timeout"}, "cannot tell whether etcd keeps its quorum"},
		{"one other member down: 1 of 3 left", MaintenanceView{Node: "cp1", APIServers: three, EtcdMember: true,
			Etcd: with(etcd3, func(m []EtcdMemberView) { m[2].Healthy = false })}, "1 of 3 voting members would stay healthy without cp1, 2 needed"},
		{"other member's node in maintenance", MaintenanceView{Node: "cp1", APIServers: three, EtcdMember: true,
			Etcd: with(etcd3, func(m []EtcdMemberView) { m[1].Maintenance = true })}, "etcd would lose its quorum"},
		{"this member already down", MaintenanceView{Node: "cp1", APIServers: three, EtcdMember: true,
			Etcd: with(etcd3, func(m []EtcdMemberView) { m[0].Healthy = false })}, ""},
		{"learner does not count", MaintenanceView{Node: "cp1", APIServers: three, EtcdMember: true,
			Etcd: []EtcdMemberView{{Name: "cp1", Voter: true, Healthy: true}, {Name: "cp2", Voter: true, Healthy: true}, {Name: "cp3", Healthy: true}}},
			"1 of 2 voting members would stay healthy"},
		{"this node a learner", MaintenanceView{Node: "cp3", APIServers: three, EtcdMember: true,
			Etcd: []EtcdMemberView{{Name: "cp1", Voter: true, Healthy: true}, {Name: "cp3", Healthy: true}}}, ""},
		{"five members, two down", MaintenanceView{Node: "cp1", APIServers: three, EtcdMember: true,
			Etcd: []EtcdMemberView{{Name: "cp1", Voter: true, Healthy: true}, {Name: "cp2", Voter: true, Healthy: true}, {Name: "cp3", Voter: true, Healthy: true},
				{Name: "cp4", Voter: true}, {Name: "cp5", Voter: true}}}, "2 of 5 voting members would stay healthy without cp1, 3 needed"},
		{"five members, one down", MaintenanceView{Node: "cp1", APIServers: three, EtcdMember: true,
			Etcd: []EtcdMemberView{{Name: "cp1", Voter: true, Healthy: true}, {Name: "cp2", Voter: true, Healthy: true}, {Name: "cp3", Voter: true, Healthy: true},
				{Name: "cp4", Voter: true, Healthy: true}, {Name: "cp5", Voter: true}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := MayEnterMaintenance(tc.v)
			checkRefusal(t, err, tc.want)
		})
	}
}

func TestMayLeaveMaintenance(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    LeaveView
		want string
	}{
		{"healthy again", LeaveView{Node: "cp1", Active: true, LocalChecked: true, LocalReady: true, EtcdMember: true, EtcdHealthy: true}, ""},
		{"not in maintenance", LeaveView{Node: "cp1", LocalChecked: true, LocalReady: true}, "cp1 is not in maintenance"},
		{"apiserver not ready", LeaveView{Node: "cp1", Active: true, LocalChecked: true}, "kube-apiserver is not ready yet"},
		{"etcd member not healthy", LeaveView{Node: "cp1", Active: true, LocalChecked: true, LocalReady: true, EtcdMember: true}, "etcd member is not healthy yet"},
		{"etcd unreadable", LeaveView{Node: "cp1", Active: true, EtcdMember: true, EtcdErr: "timeout"}, "cannot read cp1's etcd member"},
		{"no checks, no member", LeaveView{Node: "cp1", Active: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) { checkRefusal(t, MayLeaveMaintenance(tc.v), tc.want) })
	}
}

func checkRefusal(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("got %v, want a refusal with %q", err, want)
	}
	if !strings.Contains(r.Reason, want) || strings.Contains(r.Reason, "\n") {
		t.Fatalf("reason %q, want one line with %q", r.Reason, want)
	}
}

// maintAgent is a real agent of node cp1 of a two-node cluster on
// loopback: its load balancer checks two stub apiservers (real TLS, the
// cluster's certificates) and its join port serves the peer API.
type maintAgent struct {
	ag       *Agent
	lbp      *LBPart
	sock     string
	tcp      string
	peer     string
	root     string
	stateDir string
	logs     *testbuf.Buffer // read by the test while the agent writes
	apis     []*stubapi.Server
	lbAddr   string
}

// loopbackCluster is a cluster as a cluster file gives it, its
// control-plane nodes cp1, cp2, ... moved onto the loopback addrs after
// validation (the file refuses loopback node addresses; so no traffic
// leaves the host) with apiservers on apiPort, and the root of a PKI tree
// for them behind endpoint.
func loopbackCluster(t *testing.T, endpoint string, apiPort int, addrs ...string) (*config.Cluster, string) {
	t.Helper()
	_, root := testPKI(t, endpoint, addrs...)
	var nodes []config.Node
	for i := range addrs {
		nodes = append(nodes, config.Node{Name: fmt.Sprintf("cp%d", i+1), Address: fmt.Sprintf("10.77.9.%d", 11+i)})
	}
	c, err := config.Parse("haplane.yaml", config.Example(config.ExampleOptions{VIP: "10.77.9.100", Interface: "lo", Nodes: nodes}))
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range addrs {
		c.Nodes[i].Address = a
	}
	c.ControlPlaneEndpoint.APIServerPort = apiPort
	return c, root
}

// startStubAPIs starts a stub apiserver for each node of c, at the node's
// address and c's apiserver port, serving the node's apiserver certificate
// from the PKI tree at root; they stop when the test ends.
func startStubAPIs(t *testing.T, c *config.Cluster, root string) []*stubapi.Server {
	t.Helper()
	var out []*stubapi.Server
	for _, n := range c.Nodes {
		pkiDir := filepath.Join(root, n.Name, "pki")
		cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "apiserver.crt"), filepath.Join(pkiDir, "apiserver.key"))
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(n.Address, fmt.Sprint(c.ControlPlaneEndpoint.APIServerPort))
		s, err := stubapi.Start(stubapi.Config{Addr: addr, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Name: n.Name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

func startMaintAgent(t *testing.T) *maintAgent {
	t.Helper()
	// 127.0.77.x: loopback addresses of this test only.
	addrs := []string{"127.0.77.11", "127.0.77.12"}
	c, root := loopbackCluster(t, "127.0.77.100", 16443+os.Getpid()%1000, addrs...)
	m := &maintAgent{root: root, logs: &testbuf.Buffer{}, stateDir: t.TempDir()}
	log := slog.New(slog.NewTextHandler(m.logs, nil))
	m.apis = startStubAPIs(t, c, root)
	pkiDir := filepath.Join(root, "cp1", "pki")
	roots, err := LoadCertPool(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if m.lbp, err = NewLBPart(c, "cp1", "127.0.0.1:0", roots, nil, log); err != nil {
		t.Fatal(err)
	}
	apis := map[string]string{}
	for _, n := range c.Nodes {
		apis[n.Name] = net.JoinHostPort(n.Address, fmt.Sprint(c.ControlPlaneEndpoint.APIServerPort))
	}
	maint, err := NewMaintenance(MaintenanceConfig{Node: "cp1", StateDir: m.stateDir, LB: m.lbp, APIServers: apis, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	jp := &JoinPart{Addr: "127.0.0.1:0", PKIDir: pkiDir, Server: &join.Server{}, Log: log, Maintenance: maint}
	m.sock = filepath.Join(t.TempDir(), "agent.sock")
	m.ag, err = New(Config{Parts: []Part{m.lbp, jp}, APIAddr: "127.0.0.1:0", APISocket: m.sock, Log: log, Maintenance: maint,
		Info: map[string]string{"node": "cp1"}})
	if err != nil {
		t.Fatal(err)
	}
	jp.AgentStatus = func() any { return m.ag.Status() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	select {
	case <-m.ag.Started():
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not start")
	}
	apiAddrs, _ := m.ag.APIAddrs(ctx)
	for _, a := range apiAddrs {
		if !strings.HasSuffix(a, ".sock") {
			m.tcp = a
		}
	}
	m.peer = jp.Status().(map[string]string)["listen"]
	m.lbAddr = m.lbp.lb.Addrs()[0].String()
	// Both apiservers ready in cp1's checks: entering is allowed.
	deadline := time.Now().Add(10 * time.Second)
	for m.lbp.checker.Status(apis["cp1"]) != 1 || m.lbp.checker.Status(apis["cp2"]) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("apiservers not ready in the checks: %+v", m.lbp.checker.States())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m
}

func (m *maintAgent) unixClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", m.sock)
	}}}
}

// peerClient presents the certificate in certPEM/keyPEM to the peer port.
func (m *maintAgent) peerClient(t *testing.T, certPEM, keyPEM []byte) *http.Client {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(m.root, "cp1", "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tc := &tls.Config{RootCAs: roots, ServerName: "127.0.77.11"}
	if certPEM != nil {
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
}

func post(t *testing.T, c *http.Client, url, body string) (int, MaintenanceResult, string) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var res MaintenanceResult
	_ = json.Unmarshal(data, &res)
	return resp.StatusCode, res, string(data)
}

// adminCert reads admin.conf's client certificate, as kubeadm writes it.
func adminCert(t *testing.T, root string) (certPEM, keyPEM []byte) {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(filepath.Join(root, "cp1", "admin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range kc.AuthInfos {
		return a.ClientCertificateData, a.ClientKeyData
	}
	t.Fatal("admin.conf has no user")
	return nil, nil
}

// TestMaintenanceAPIAuth: a change over the read-only TCP API is refused
// with 403 and logged, and so is one over the peer port with a cluster
// certificate that is not the admin identity (or none); the unix socket
// and the admin identity over mutual TLS are served. The start that is
// served takes cp1's apiserver out of its load balancer's pool, and new
// sessions go to cp2; stop puts it back.
func TestMaintenanceAPIAuth(t *testing.T) {
	m := startMaintAgent(t)
	cp1API := m.apis[0].Addr()

	// TCP: read-only.
	code, _, body := post(t, &http.Client{Timeout: 5 * time.Second}, "http://"+m.tcp+"/maintenance/start", "")
	if code != http.StatusForbidden {
		t.Fatalf("TCP start: %d %s, want 403", code, body)
	}
	if !strings.Contains(m.logs.String(), "maintenance change refused: not on the agent's unix socket") {
		t.Errorf("TCP refusal not logged:\n%s", m.logs.String())
	}
	// Peer port, a cluster-CA certificate that is not the admin's: the
	// one every agent reads its peers' status with.
	kc, err := os.ReadFile(filepath.Join(m.root, "cp1", "pki", "apiserver-kubelet-client.crt"))
	if err != nil {
		t.Fatal(err)
	}
	kk, _ := os.ReadFile(filepath.Join(m.root, "cp1", "pki", "apiserver-kubelet-client.key"))
	peerURL := "https://" + m.peer + PeerMaintenancePath
	if code, _, body := post(t, m.peerClient(t, kc, kk), peerURL+"start", ""); code != http.StatusForbidden {
		t.Fatalf("non-admin certificate: %d %s, want 403", code, body)
	}
	if code, _, body := post(t, m.peerClient(t, nil, nil), peerURL+"start", ""); code != http.StatusForbidden {
		t.Fatalf("no certificate: %d %s, want 403", code, body)
	}
	if !strings.Contains(m.logs.String(), "CN=kube-apiserver-kubelet-client") {
		t.Errorf("non-admin refusal not logged with the client's name:\n%s", m.logs.String())
	}
	if m.ag.Status().Maintenance.Active {
		t.Fatal("a refused change changed the state")
	}
	if in, _ := m.lbp.backend(cp1API); !in {
		t.Fatal("a refused change took the apiserver out of the pool")
	}

	// The unix socket: served.
	code, res, body := post(t, m.unixClient(), "http://agent/maintenance/start", `{"drainTimeout":"2s"}`)
	if code != http.StatusOK || !res.OK {
		t.Fatalf("unix start: %d %s", code, body)
	}
	var names []string
	for _, s := range res.Steps {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "vip-handover,lb-drain,etcd-leader,ready" {
		t.Errorf("steps %s", got)
	}
	t.Logf("start: %s", body)
	if in, active := m.lbp.backend(cp1API); in || active != 0 {
		t.Errorf("cp1's apiserver still in the pool (%v) or with %d sessions", in, active)
	}
	// New sessions through the load balancer reach cp2 only.
	for range 5 {
		if got := versionVia(t, m.lbAddr); got != "cp2" {
			t.Fatalf("a session went to %s while cp1 is in maintenance", got)
		}
	}
	// Persisted: a second start is refused, with the reason, and /status
	// says so.
	if st, err := os.ReadFile(filepath.Join(m.stateDir, MaintenanceStateFile)); err != nil || !strings.Contains(string(st), `"active": true`) {
		t.Errorf("state file: %s %v", st, err)
	}
	code, res, _ = post(t, m.unixClient(), "http://agent/maintenance/start", "")
	if code != http.StatusConflict || res.Refused != "cp1 is in maintenance already" {
		t.Errorf("second start: %d %+v", code, res)
	}
	var st Status
	resp, err := http.Get("http://" + m.tcp + "/status")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.Maintenance == nil || !st.Maintenance.Active {
		t.Errorf("/status maintenance %+v", st.Maintenance)
	}

	// Mutual TLS with admin.conf's identity: served.
	ac, ak := adminCert(t, m.root)
	code, res, body = post(t, m.peerClient(t, ac, ak), peerURL+"stop", "")
	if code != http.StatusOK || !res.OK {
		t.Fatalf("admin stop: %d %s", code, body)
	}
	if in, _ := m.lbp.backend(cp1API); !in {
		t.Error("cp1's apiserver not back in the pool after stop")
	}
	seen := map[string]bool{}
	for range 20 {
		seen[versionVia(t, m.lbAddr)] = true
	}
	if !seen["cp1"] {
		t.Errorf("no session reached cp1 after stop: %v", seen)
	}
}

// TestMaintenanceRefusedWhenNoOtherAPIServer: with cp2's apiserver down,
// entering maintenance on cp1 is refused with the reason, and nothing
// changes.
func TestMaintenanceRefusedWhenNoOtherAPIServer(t *testing.T) {
	m := startMaintAgent(t)
	m.apis[1].Close()
	cp2 := m.apis[1].Addr()
	deadline := time.Now().Add(10 * time.Second)
	for m.lbp.checker.Status(cp2) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("cp2 never seen down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, res, body := post(t, m.unixClient(), "http://agent/maintenance/start", "")
	if code != http.StatusConflict || !strings.Contains(res.Refused, "no other kube-apiserver is ready (cp2 not ready)") {
		t.Fatalf("start: %d %s", code, body)
	}
	if m.ag.Status().Maintenance.Active {
		t.Error("refused start changed the state")
	}
	if _, err := os.Stat(filepath.Join(m.stateDir, MaintenanceStateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused start wrote the state file: %v", err)
	}
	if in, _ := m.lbp.backend(m.apis[0].Addr()); !in {
		t.Error("refused start took cp1 out of the pool")
	}
}

// versionVia asks the stub apiserver behind the load balancer which node
// it is.
func versionVia(t *testing.T, lbAddr string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get("https://" + lbAddr + "/version")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return v["node"]
}

// TestMaintenanceKeepVIP: a start with keepVIP (an upgrade of the
// control-plane components) reports the VIP kept instead of handed over,
// persists it, and calls the apiserver drained once it is out of the pool
// even though a long-lived session to it is still open (it moves when the
// apiserver stops). With the local apiserver then down, the local-apiserver
// check passes: the node is without it on purpose and keeps the VIP.
func TestMaintenanceKeepVIP(t *testing.T) {
	m := startMaintAgent(t)
	cp1API := m.apis[0].Addr()
	// A keep-alive session through the load balancer to cp1's apiserver,
	// held open: a kubelet's watch.
	var held *http.Client
	for i := 0; i < 20 && held == nil; i++ {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := c.Get("https://" + m.lbAddr + "/version")
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if v["node"] == "cp1" {
			held = c
		} else {
			c.CloseIdleConnections()
		}
	}
	if held == nil {
		t.Fatal("no session reached cp1 in 20 tries")
	}
	defer held.CloseIdleConnections()
	if _, active := m.lbp.backend(cp1API); active == 0 {
		t.Fatal("the held session is not counted on cp1")
	}

	code, res, body := post(t, m.unixClient(), "http://agent/maintenance/start", `{"drainTimeout":"1s","keepVIP":true}`)
	if code != http.StatusOK || !res.OK {
		t.Fatalf("start: %d %s", code, body)
	}
	var names []string
	for _, s := range res.Steps {
		names = append(names, s.Name)
		if s.Name == "lb-drain" && !strings.Contains(s.Detail, "long-lived sessions remain") {
			t.Errorf("lb-drain detail %q: want the held session named as long-lived", s.Detail)
		}
	}
	if got := strings.Join(names, ","); got != "vip-kept,lb-drain,etcd-leader,ready" {
		t.Errorf("steps %s", got)
	}
	if st, err := os.ReadFile(filepath.Join(m.stateDir, MaintenanceStateFile)); err != nil || !strings.Contains(string(st), `"keepVIP": true`) {
		t.Errorf("state file: %s %v", st, err)
	}

	m.apis[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for m.lbp.checker.Status(cp1API) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("cp1's apiserver never seen down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := m.lbp.LocalAPIServerHealthy(context.Background()); err != nil {
		t.Errorf("local-apiserver check during maintenance: %v (want it to pass: the VIP stays)", err)
	}
	if err := m.lbp.AnyBackendHealthy(context.Background()); err != nil {
		t.Errorf("backend check with cp2 ready: %v", err)
	}
}
