package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/netns"
	"github.com/haplane/haplane/internal/testutil/birdtest"
	"github.com/haplane/haplane/internal/testutil/testbuf"
)

// TestBGPConfigFromCluster: the cluster file's vip.bgp becomes each node's
// announcer configuration, the router ID defaulting to the node's address.
func TestBGPConfigFromCluster(t *testing.T) {
	file := `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: lab
controlPlaneEndpoint:
  vip: 10.77.0.100
vip:
  mode: bgp
  bgp:
    localASN: 4200000000
    communities: ["64512:100"]
    peers:
      - {address: 10.77.9.1, asn: 64513, password: pw, port: 1179}
nodes:
  - {name: cp1, address: 10.77.0.11}
  - {name: cp2, address: 10.77.0.12}
`
	c, err := config.Parse("haplane.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := BGPConfigFromCluster(c, "cp2")
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Peers[0]
	switch {
	case cfg.VIP != netip.MustParseAddr("10.77.0.100"), cfg.LocalASN != 4200000000, cfg.RouterID != netip.MustParseAddr("10.77.0.12"):
		t.Errorf("identity: %+v", cfg)
	case cfg.HoldTime != 3*time.Second || cfg.Keepalive != time.Second:
		t.Errorf("timers: %s %s", cfg.HoldTime, cfg.Keepalive)
	case len(cfg.Peers) != 1 || p.Address != netip.MustParseAddr("10.77.9.1") || p.ASN != 64513 || p.Password != "pw" || p.Port != 1179:
		t.Errorf("peers: %+v", cfg.Peers)
	case len(cfg.Communities) != 1 || cfg.Communities[0] != 64512<<16|100:
		t.Errorf("communities: %v", cfg.Communities)
	}
	if _, err := BGPConfigFromCluster(c, "cp9"); err == nil || !strings.Contains(err.Error(), "cp9") {
		t.Errorf("unknown node: %v", err)
	}
}

// loopBIRD is a BIRD 2 on loopback, passive for one neighbor (127.0.0.1,
// the source the kernel gives a connection to 127.0.79.1): the real
// router an in-process agent announces to. It imports what the agent
// sends into its own table only (no kernel protocol: the host's routing
// is untouched).
type loopBIRD struct {
	birdc, sock string
	port        int
}

const loopBIRDAddr = "127.0.79.1"

func startLoopBIRD(t *testing.T) *loopBIRD {
	t.Helper()
	bird, birdc := birdtest.Require(t)
	dir := t.TempDir()
	b := &loopBIRD{birdc: birdc, sock: filepath.Join(dir, "bird.ctl"), port: 20000 + os.Getpid()%10000}
	conf := filepath.Join(dir, "bird.conf")
	// multihop: BIRD takes no neighbor on lo as directly connected; the
	// static route resolves the next hop (127.0.0.1) in its own table.
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`router id %[1]s;
protocol device {}
protocol static { ipv4; route 127.0.0.0/8 via "lo"; }
protocol bgp node {
  local %[1]s port %[2]d as 64513;
  neighbor 127.0.0.1 as 64512;
  passive on;
  strict bind on;
  multihop;
  hold time 3;
  keepalive time 1;
  ipv4 { import all; export none; };
}
`, loopBIRDAddr, b.port)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bird, "-f", "-c", conf, "-s", b.sock)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		netns.StopPIDs([]int{cmd.Process.Pid}, 2*time.Second)
		_ = cmd.Wait()
	})
	return b
}

// has reports whether BIRD has a route for prefix.
func (b *loopBIRD) has(prefix string) bool {
	out, _ := exec.Command(b.birdc, "-s", b.sock, "show", "route", "for", prefix).CombinedOutput()
	return strings.Contains(string(out), prefix)
}

func (b *loopBIRD) waitRoute(t *testing.T, what, prefix string, present bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for b.has(prefix) != present {
		if time.Now().After(deadline) {
			out, _ := exec.Command(b.birdc, "-s", b.sock, "show", "protocols", "all", "node").CombinedOutput()
			t.Fatalf("%s: BIRD has %s: %v after 15s, want %v:\n%s", what, prefix, !present, present, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBGPMaintenanceWithdraws: a real agent (load balancer over two stub
// apiservers, the BGP announcer) peers with a real BIRD. Maintenance
// start withdraws cp1's route, reported as the bgp-withdraw step, and the
// route is gone from BIRD when the answer comes; an agent restarted in
// maintenance does not announce; stop announces it again (bgp-announce).
func TestBGPMaintenanceWithdraws(t *testing.T) {
	b := startLoopBIRD(t)
	c, root := loopbackCluster(t, "127.0.79.100", 17443+os.Getpid()%1000, "127.0.79.11", "127.0.79.12")
	const vip, route = "10.77.73.100", "10.77.73.100/32"
	c.VIP.Mode = config.VIPModeBGP
	c.ControlPlaneEndpoint.VIP = vip
	c.VIP.BGP = &config.BGP{LocalASN: 64512, HoldTime: config.Duration{Duration: 3 * time.Second}, KeepaliveInterval: config.Duration{Duration: time.Second},
		Peers: []config.BGPPeer{{Address: loopBIRDAddr, ASN: 64513, Port: b.port}}}
	startStubAPIs(t, c, root)
	stateDir := t.TempDir()
	logs := &testbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	roots, err := LoadCertPool(filepath.Join(root, "cp1", "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	apis := map[string]string{}
	for _, n := range c.Nodes {
		apis[n.Name] = net.JoinHostPort(n.Address, fmt.Sprint(c.ControlPlaneEndpoint.APIServerPort))
	}
	// run starts cp1's agent; the returned func stops it (SIGTERM's path).
	run := func() (sock string, stop func()) {
		lbp, err := NewLBPart(c, "cp1", "127.0.0.1:0", roots, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		bp, err := NewBGPPart(c, "cp1", lbp, log)
		if err != nil {
			t.Fatal(err)
		}
		maint, err := NewMaintenance(MaintenanceConfig{Node: "cp1", StateDir: stateDir, BGP: bp, LB: lbp, APIServers: apis, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		sock = filepath.Join(t.TempDir(), "agent.sock")
		ag, err := New(Config{Parts: []Part{lbp, bp}, APISocket: sock, Log: log, Maintenance: maint, Info: map[string]string{"node": "cp1"}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ag.Run(ctx) }()
		select {
		case <-ag.Started():
		case err := <-done:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("agent did not start")
		}
		// Both apiservers ready in cp1's checks: entering is allowed.
		deadline := time.Now().Add(10 * time.Second)
		for lbp.checker.Status(apis["cp1"]) != 1 || lbp.checker.Status(apis["cp2"]) != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("apiservers not ready in the checks: %+v", lbp.checker.States())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return sock, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		}
	}
	unix := func(sock string) *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	}
	stepOf := func(res MaintenanceResult, name string) MaintenanceStep {
		for _, s := range res.Steps {
			if s.Name == name {
				return s
			}
		}
		t.Fatalf("no step %s in %+v", name, res.Steps)
		return MaintenanceStep{}
	}

	sock, stop := run()
	b.waitRoute(t, "healthy", route, true)
	code, res, body := post(t, unix(sock), "http://agent/maintenance/start", `{"drainTimeout":"2s"}`)
	if code != http.StatusOK || !res.OK {
		t.Fatalf("start: %d %s", code, body)
	}
	if s := stepOf(res, "bgp-withdraw"); !s.OK || !strings.Contains(s.Detail, route+" withdrawn from "+loopBIRDAddr) {
		t.Errorf("bgp-withdraw step: %+v", s)
	}
	// Start answered after the withdrawal left: BIRD has dropped it.
	if b.has(route) {
		t.Errorf("BIRD still has %s when maintenance start answered", route)
	}
	// Restarted in maintenance: the session comes up, the route does not.
	stop()
	sock, stop = run()
	defer func() { stop() }()
	time.Sleep(3 * time.Second) // session up (about 1s) and well past two health reads
	if b.has(route) {
		t.Fatalf("an agent restarted in maintenance announced %s", route)
	}
	code, res, body = post(t, unix(sock), "http://agent/maintenance/stop", "")
	if code != http.StatusOK || !res.OK {
		t.Fatalf("stop: %d %s", code, body)
	}
	if s := stepOf(res, "bgp-announce"); !s.OK || !strings.Contains(s.Detail, route+" announced again to "+loopBIRDAddr) {
		t.Errorf("bgp-announce step: %+v", s)
	}
	b.waitRoute(t, "after maintenance stop", route, true)
}
