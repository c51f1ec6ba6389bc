package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/bgp"
	"github.com/haplane/haplane/internal/config"
)

// The lab in vip.mode bgp (lab up --vip-mode bgp): every control-plane
// host announces the VIP over BGP to a router host running BIRD 2, and the
// client sits behind that router on a network of its own, so it reaches
// the VIP routed, over the router's ECMP route to every healthy node.
//
//	cp1..cpN, router (eth0) on Subnet; router (eth1) and client on BGPClientNet
var (
	RouterAddr       = netip.MustParseAddr("10.77.0.1")
	BGPClientNet     = netip.MustParsePrefix("10.77.72.0/24")
	RouterClientAddr = netip.MustParseAddr("10.77.72.1")
	BGPClientAddr    = netip.MustParseAddr("10.77.72.50")
)

// The lab's AS numbers: the nodes share one, the router has its own.
const (
	LabNodeASN   = 64512
	LabRouterASN = 64513
)

// VIP modes of lab up.
const (
	VIPModeVRRP = config.VIPModeVRRP
	VIPModeBGP  = config.VIPModeBGP
	// VIPLBHaplaneBGP is the stack --vip-mode bgp selects.
	VIPLBHaplaneBGP = "haplane-bgp"
)

func init() { RegisterStack(bgpStack{}) }

// bgpStack is the haplane stack with the VIP announced over BGP.
type bgpStack struct{ haplaneStack }

func (bgpStack) Name() string { return VIPLBHaplaneBGP }

func (bgpStack) Prepare(o *Options) error {
	if _, err := exec.LookPath("bird"); err != nil {
		return fmt.Errorf("lab: --vip-mode bgp runs BIRD 2 on the router host (apt-get install bird2): %w", err)
	}
	return nil
}

// Status is the haplane stack's, with every node that announces the VIP
// as one of its holders: with ECMP they all hold it. Each agent's /status
// is read once, for the view and its BGP part alike.
func (bgpStack) Status(st *State) View {
	hosts := st.serverHosts()
	outs := make(map[string][]byte, len(hosts))
	v := ClusterView(st.Endpoint, len(hosts), func(i int) (HostView, []byte, error) {
		h := hosts[i]
		out, err := agentStatus(st, h)
		if err == nil {
			outs[h.Name] = out
		}
		return HostView{Host: h.Name, Address: h.Address, Role: h.Role}, out, err
	})
	st.fillEtcd(&v)
	var holders []string
	for i, h := range v.Hosts {
		if h.Role != "control-plane" {
			continue
		}
		if b := bgpPart(outs[h.Host]); b != nil {
			v.Hosts[i].BGP = b
			v.Hosts[i].HoldsVIP = b.Announced
			if b.Announced {
				holders = append(holders, h.Host)
			}
		}
	}
	v.VIPMode = VIPModeBGP
	v.VIPOwner = holderName(holders)
	return v
}

// Holder is every announcing node, "a+b+c": not a split brain here. The
// chaos runs poll it every 100 ms and stamp each answer with the poll's
// start, so it asks only the BGP parts, of every node at once: the whole
// view (every agent one after the other, then etcd) took seconds on a
// loaded machine and blurred the timeline by as much.
func (bgpStack) Holder(st *State) string {
	var cps []HostState
	for _, h := range st.serverHosts() {
		if h.Role == "control-plane" {
			cps = append(cps, h)
		}
	}
	announced := make([]bool, len(cps))
	var wg sync.WaitGroup
	for i, h := range cps {
		wg.Go(func() {
			if out, err := agentStatus(st, h); err == nil {
				b := bgpPart(out)
				announced[i] = b != nil && b.Announced
			}
		})
	}
	wg.Wait()
	var holders []string
	for i, h := range cps {
		if announced[i] {
			holders = append(holders, h.Name)
		}
	}
	return holderName(holders)
}

// agentStatus is host h's agent's /status, asked from inside its namespace.
func agentStatus(st *State, h HostState) ([]byte, error) {
	return (&Host{NS: h.NS}).Command(st.Binary, "status", "--raw", "--api-addr", fmt.Sprintf("127.0.0.1:%d", agent.DefaultAPIPort)).Output()
}

// bgpPart is the BGP part of an agent's /status, nil without one.
func bgpPart(status []byte) *bgp.State {
	var s struct {
		Parts struct {
			BGP *bgp.State `json:"bgp"`
		} `json:"parts"`
	}
	if len(status) == 0 || json.Unmarshal(status, &s) != nil {
		return nil
	}
	return s.Parts.BGP
}

// holderName joins the announcing nodes, or says "nobody".
func holderName(holders []string) string {
	if len(holders) == 0 {
		return "nobody"
	}
	return strings.Join(holders, "+")
}

// announcing reports whether every control-plane host announces the VIP.
func announcing(v View) bool {
	n := 0
	for _, h := range v.Hosts {
		if h.Role == "control-plane" {
			if !h.HoldsVIP {
				return false
			}
			n++
		}
	}
	return n > 0
}

func (bgpStack) Steady(_ *config.Cluster, v View) bool { return announcing(v) }
func (bgpStack) Hold() time.Duration                   { return 0 }
func (bgpStack) Settled(st *State) bool {
	return announcing(bgpStack{}.Status(st)) && st.Probe(3*time.Second) == nil
}

// bgpExample is the vip.bgp block of the lab's cluster file: every node
// peers with the router, with BFD.
func bgpExample() *config.BGP {
	return &config.BGP{LocalASN: LabNodeASN, Peers: []config.BGPPeer{{Address: RouterAddr.String(), ASN: LabRouterASN, BFD: true}}}
}

// setupBGPNet adds the router host, moves the client behind it and starts
// BIRD. Up calls it once the hosts exist and before their processes start.
func setupBGPNet(st *State, n *Net, c *config.Cluster) error {
	r, err := n.AddHost("router", RouterAddr, Subnet.Bits())
	if err != nil {
		return err
	}
	ci := -1
	for i, h := range st.Hosts {
		if h.Role == "client" {
			ci = i
		}
	}
	if ci < 0 {
		return fmt.Errorf("lab: bgp: no client host")
	}
	cl := st.Hosts[ci].NS
	steps := [][]string{
		// Off the nodes' link: the client reaches them through the router only.
		{"-n", cl, "link", "del", "eth0"},
		{"link", "add", "eth1", "netns", r.NS, "type", "veth", "peer", "name", "eth0", "netns", cl},
		{"-n", r.NS, "addr", "add", netip.PrefixFrom(RouterClientAddr, BGPClientNet.Bits()).String(), "dev", "eth1"},
		{"-n", r.NS, "link", "set", "eth1", "up"},
		{"-n", cl, "addr", "add", netip.PrefixFrom(BGPClientAddr, BGPClientNet.Bits()).String(), "dev", "eth0"},
		{"-n", cl, "link", "set", "eth0", "up"},
		{"-n", cl, "route", "add", "default", "via", RouterClientAddr.String()},
	}
	for _, h := range st.Hosts {
		if h.Role != "client" {
			steps = append(steps, []string{"-n", h.NS, "route", "add", BGPClientNet.String(), "via", RouterAddr.String()})
		}
	}
	for _, args := range steps {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("lab: bgp: ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	// The router forwards, and hashes flows on their ports too (policy 1):
	// one client's connections spread over every node.
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"} {
		if out, err := exec.Command("ip", "netns", "exec", r.NS, "sysctl", "-qw", kv).CombinedOutput(); err != nil {
			return fmt.Errorf("lab: bgp: router sysctl %s: %v: %s", kv, err, out)
		}
	}
	st.Hosts[ci].Address = BGPClientAddr.String()

	dir := filepath.Join(st.Dir, "router")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, birdConfig(c), 0o644); err != nil {
		return err
	}
	bird, err := exec.LookPath("bird")
	if err != nil {
		return err
	}
	if _, err := st.start(HostState{Name: "router", NS: r.NS, Address: RouterAddr.String(), Role: "router"},
		ProcSpec{Name: "bird", Exec: bird, Args: []string{"-f", "-c", conf, "-s", BIRDSocket(st)}}); err != nil {
		return err
	}
	return st.save()
}

// BIRDSocket is the router's BIRD control socket: birdc -s SOCKET show route.
func BIRDSocket(st *State) string { return filepath.Join(st.Dir, "router", "bird.ctl") }

// birdConfig peers the router with every control-plane node (passive: the
// nodes connect), with BFD, and installs the VIP routes of every node as
// one multipath route (merge paths).
func birdConfig(c *config.Cluster) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `router id %s;
protocol device {}
protocol kernel { ipv4 { export all; }; merge paths on; }
protocol bfd { interface "eth0" { min rx interval 100 ms; min tx interval 100 ms; multiplier 5; }; }
template bgp node {
  local %s as %d;
  passive on;
  # Back within a second after an error (a BFD flap), not BIRD's 60s.
  error wait time 1, 5;
  hold time 3;
  keepalive time 1;
  bfd on;
  ipv4 { import all; export none; };
}
`, RouterAddr, RouterAddr, LabRouterASN)
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "protocol bgp %s from node { neighbor %s as %d; }\n", n.Name, n.Address, c.VIP.BGP.LocalASN)
	}
	return []byte(b.String())
}
