package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/netns"
	"github.com/haplane/haplane/internal/testutil/birdtest"
)

// helperConfig, when set, makes this test binary the announcer side of
// TestBIRDLearnsAndLosesVIP: the parent runs it inside the node's
// namespace (gobgp's goroutines cannot be pinned to one namespace
// in-process), with a JSON Config here, and drives it over stdin.
var helperConfig = flag.String("bgp-helper", "", "internal: run as the announcer of a netns test")

// family is one address family's addresses of the netns tests: the VIP
// and the link between the router and the node (the router IDs stay
// IPv4, as BGP identifiers are).
type family struct {
	vip, router, node string
	bits              int
	// prefix is the VIP route as BIRD prints it, channel its BIRD channel.
	prefix, channel string
}

var (
	ipv4 = family{vip: "10.77.71.100", router: "10.77.71.1", node: "10.77.71.11", bits: 24, prefix: "10.77.71.100/32", channel: "ipv4"}
	ipv6 = family{vip: "fd77:71::100", router: "fd77:71::1", node: "fd77:71::11", bits: 64, prefix: "fd77:71::100/128", channel: "ipv6"}
)

const (
	routerID = "10.77.71.1"
	nodeID   = "10.77.71.11"
)

// TestAnnouncerHelper is the child process; it does nothing in a normal run.
func TestAnnouncerHelper(t *testing.T) {
	if *helperConfig == "" {
		t.Skip("helper process of TestBIRDLearnsAndLosesVIP only")
	}
	var cfg Config
	if err := json.Unmarshal([]byte(*helperConfig), &cfg); err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var err error
		switch in.Text() {
		case "up":
			err = a.SetHealth(Ready)
		case "panic":
			err = a.SetHealth(Panic)
		case "down":
			err = a.SetHealth(Down)
		case "state":
			b, _ := json.Marshal(a.State(ctx))
			fmt.Println(string(b))
			continue
		case "stop":
			err = a.Stop(ctx)
			fmt.Println("stopped", err)
			return
		}
		fmt.Println("ok", err)
	}
}

// child is the announcer process seen from the test.
type child struct {
	stdin *os.File
	out   *bufio.Scanner
}

func (c *child) do(t *testing.T, cmd string) string {
	t.Helper()
	if _, err := fmt.Fprintln(c.stdin, cmd); err != nil {
		t.Fatalf("announcer %s: %v", cmd, err)
	}
	for c.out.Scan() {
		line := c.out.Text()
		if strings.HasPrefix(line, "ok") || strings.HasPrefix(line, "stopped") || strings.HasPrefix(line, "{") {
			return line
		}
	}
	t.Fatalf("announcer %s: no answer", cmd)
	return ""
}

// birdLab is a router namespace running BIRD 2 and a node namespace
// running the announcer (this binary as TestAnnouncerHelper), on one link.
type birdLab struct {
	fam   family
	a     *child
	pid   int // the announcer's
	node  *netns.Host
	birdc string
	sock  string
}

// route is BIRD's answer for the VIP route.
func (l *birdLab) route() string {
	out, _ := exec.Command(l.birdc, "-s", l.sock, "show", "route", "all", l.fam.prefix).CombinedOutput()
	return string(out)
}

// waitRoute waits until BIRD has the route (with the node as next hop and
// the community) or has not, and returns how long that took.
func (l *birdLab) waitRoute(t *testing.T, what string, present bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(15 * time.Second)
	for {
		r := l.route()
		if strings.Contains(r, l.fam.prefix) == present {
			if present && (!strings.Contains(r, "via "+l.fam.node) || !strings.Contains(r, "(64512,100)")) {
				t.Fatalf("%s: route lacks next hop %s or community (64512,100):\n%s", what, l.fam.node, r)
			}
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			b, _ := exec.Command(l.birdc, "-s", l.sock, "show", "protocols", "all", "node").CombinedOutput()
			t.Fatalf("%s: route present=%v wanted %v after 15s:\n%s\n%s", what, !present, present, r, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newBIRDLab(t *testing.T, fam family, bfd bool) *birdLab {
	bird, birdc := birdtest.Require(t)
	prefix := fmt.Sprintf("hbgp%d", os.Getpid()%100000)
	if bfd {
		prefix += "f"
	}
	if fam.channel == "ipv6" {
		prefix += "6"
	}
	n, err := netns.NewNet(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	router, err := n.AddHost("r", netip.MustParseAddr(fam.router), fam.bits)
	if err != nil {
		t.Fatal(err)
	}
	node, err := n.AddHost("n", netip.MustParseAddr(fam.node), fam.bits)
	if err != nil {
		t.Fatal(err)
	}
	waitNotTentative(t, router, node)

	dir := t.TempDir()
	sock := filepath.Join(dir, "bird.ctl")
	conf := filepath.Join(dir, "bird.conf")
	bfdProto, bfdOn := "", ""
	if bfd {
		bfdProto = "protocol bfd { interface \"eth0\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 5; }; }\n"
		bfdOn = "  bfd on;\n"
	}
	// Passive: the node connects out and does not listen.
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`router id %s;
protocol device {}
%sprotocol bgp node {
  local %s as 64513;
  neighbor %s as 64512;
  passive on;
  hold time 3;
  keepalive time 1;
  error wait time 1, 5;
%s  %s { import all; export none; };
}
`, routerID, bfdProto, fam.router, fam.node, bfdOn, fam.channel)), 0o644); err != nil {
		t.Fatal(err)
	}
	bcmd := router.Command(bird, "-f", "-c", conf, "-s", sock)
	bcmd.Stderr = os.Stderr
	if err := bcmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		netns.StopPIDs([]int{bcmd.Process.Pid}, 2*time.Second)
		_ = bcmd.Wait()
	})

	cfg, _ := json.Marshal(Config{
		VIP: netip.MustParseAddr(fam.vip), LocalASN: 64512, RouterID: netip.MustParseAddr(nodeID),
		Peers:       []Peer{{Address: netip.MustParseAddr(fam.router), ASN: 64513, BFD: bfd}},
		Communities: []uint32{64512<<16 | 100},
	})
	acmd := node.Command(os.Args[0], "-test.run=^TestAnnouncerHelper$", "-bgp-helper="+string(cfg))
	acmd.Stderr = os.Stderr
	stdinR, stdinW, _ := os.Pipe()
	acmd.Stdin = stdinR
	outp, err := acmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := acmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdinR.Close()
	t.Cleanup(func() {
		stdinW.Close()
		netns.StopPIDs([]int{acmd.Process.Pid}, 3*time.Second)
		_ = acmd.Wait()
	})
	return &birdLab{fam: fam, a: &child{stdin: stdinW, out: bufio.NewScanner(outp)}, pid: acmd.Process.Pid, node: node, birdc: birdc, sock: sock}
}

// TestBIRDLearnsAndLosesVIP asks a real BIRD for the VIP route: learned
// with the node as next hop when healthy, gone when unhealthy, back when
// healthy again, gone on a graceful stop.
func TestBIRDLearnsAndLosesVIP(t *testing.T) { testLearnsAndLoses(t, ipv4) }

// TestBIRDLearnsAndLosesVIPv6 is the same with an IPv6 VIP: a /128 over
// an IPv6 session (multiprotocol NLRI, RFC 4760), the node's address as
// next hop.
func TestBIRDLearnsAndLosesVIPv6(t *testing.T) { testLearnsAndLoses(t, ipv6) }

func testLearnsAndLoses(t *testing.T, fam family) {
	l := newBIRDLab(t, fam, false)
	a := l.a
	waitRoute := func(what string, present bool) { t.Helper(); l.waitRoute(t, what, present) }
	route := l.route
	// Not healthy yet: a session but no route.
	waitEstablished(t, a)
	waitRoute("before health", false)
	if s := a.do(t, "up"); s != "ok <nil>" {
		t.Fatalf("up: %s", s)
	}
	waitRoute("healthy", true)
	a.do(t, "down")
	waitRoute("unhealthy", false)
	if s := a.do(t, "state"); !strings.Contains(s, `"announced":false`) {
		t.Errorf("state after down: %s", s)
	}
	a.do(t, "up")
	waitRoute("healthy again", true)
	// Stop returns only once the withdrawal left: the route is gone at once.
	if s := a.do(t, "stop"); s != "stopped <nil>" {
		t.Fatalf("stop: %s", s)
	}
	if r := route(); strings.Contains(r, fam.prefix) {
		t.Errorf("route still at the router right after a graceful stop:\n%s", r)
	}
}

// TestBIRDBFDDropsSilentNode: with BFD the router drops the route of a
// node gone silent (its link down: no FIN, no RST, as a node that lost
// power) on BFD's detection time, well inside the 3s hold time.
func TestBIRDBFDDropsSilentNode(t *testing.T) {
	l := newBIRDLab(t, ipv4, true)
	waitEstablished(t, l.a)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st State
		_ = json.Unmarshal([]byte(l.a.do(t, "state")), &st)
		if st.Peers[0].BFD == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("BFD session not up after 10s: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := l.a.do(t, "up"); s != "ok <nil>" {
		t.Fatalf("up: %s", s)
	}
	l.waitRoute(t, "healthy", true)
	if err := l.node.SetLink(false); err != nil {
		t.Fatal(err)
	}
	gone := l.waitRoute(t, "after link down", false)
	t.Logf("route gone %s after the node's link went down (BFD %s x %d)", gone, BFDInterval, BFDMultiplier)
	if gone >= 3*time.Second {
		t.Errorf("route gone after %s: that is the hold time, not BFD", gone)
	}
}

// TestBIRDPanicKeepsNeverStarts: in panic (no apiserver ready, some live)
// a route the router holds stays, one it does not hold is not started,
// and a route whose session went away while in panic is withdrawn from
// the node's table, so the session that comes back does not bring it:
// the node cut off from the others, its own apiserver live but cut from
// etcd, waits for a ready apiserver before it draws clients again.
func TestBIRDPanicKeepsNeverStarts(t *testing.T) {
	l := newBIRDLab(t, ipv4, false)
	a := l.a
	waitEstablished(t, a)
	absentFor := func(what string, d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			a.do(t, "panic")
			if r := l.route(); strings.Contains(r, l.fam.prefix) {
				t.Fatalf("%s: the router learned the route in panic:\n%s", what, r)
			}
		}
	}
	absentFor("panic before any announcement", time.Second)
	a.do(t, "up")
	l.waitRoute(t, "ready", true)
	a.do(t, "panic")
	time.Sleep(500 * time.Millisecond)
	a.do(t, "panic")
	if r := l.route(); !strings.Contains(r, l.fam.prefix) {
		t.Fatalf("panic withdrew a route the router held:\n%s", r)
	}
	// Cut the node: the session ends on the hold time, the route with it.
	if err := l.node.SetLink(false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var st State
		_ = json.Unmarshal([]byte(a.do(t, "panic")), &st)
		_ = json.Unmarshal([]byte(a.do(t, "state")), &st)
		if !st.Announced {
			if st.Peers[0].State == "established" {
				t.Fatalf("withdrawn while the session was still established: %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("in panic with the session gone, the route stayed in the node's table: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := l.node.SetLink(true); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, a)
	absentFor("panic after the session came back", 1500*time.Millisecond)
	a.do(t, "up")
	l.waitRoute(t, "ready after the session came back", true)
}

func waitEstablished(t *testing.T, a *child) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := a.do(t, "state")
		var st State
		if err := json.Unmarshal([]byte(s), &st); err != nil {
			t.Fatalf("state %q: %v", s, err)
		}
		if len(st.Peers) == 1 && st.Peers[0].State == "established" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session not established after 15s: %s", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitNotTentative waits for the hosts' IPv6 addresses to pass duplicate
// address detection: a tentative address cannot be connected from.
func waitNotTentative(t *testing.T, hosts ...*netns.Host) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, h := range hosts {
		for {
			out, err := exec.Command("ip", "-n", h.NS, "-6", "addr", "show", "tentative").CombinedOutput()
			if err != nil {
				t.Fatalf("%s: ip addr: %v: %s", h.NS, err, out)
			}
			if len(strings.TrimSpace(string(out))) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: addresses still tentative after 10s:\n%s", h.NS, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
