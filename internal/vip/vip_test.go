//go:build linux

package vip

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLinkInNamespace runs Take, Announce and Release inside a network
// namespace of its own (the test binary re-runs itself there) on a veth
// whose other end is a peer host: the address appears and goes, and the
// peer, which learns from gratuitous ARP as a VIP's neighbours must
// (arp_accept), maps the VIP to this host's MAC.
func TestLinkInNamespace(t *testing.T) {
	if act := os.Getenv("HAPLANE_VIP_ACTION"); act != "" {
		// The child, inside the host namespace.
		l, err := New("eth0", []netip.Addr{netip.MustParseAddr("10.77.9.100")})
		if err != nil {
			t.Fatal(err)
		}
		steps := map[string][]func() error{"take": {l.Take, l.Take, l.Announce}, "release": {l.Release, l.Release}}[act]
		for _, step := range steps {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root for network namespaces")
	}
	host, peer := fmt.Sprintf("hpv%d-a", os.Getpid()%100000), fmt.Sprintf("hpv%d-b", os.Getpid()%100000)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	run("ip", "netns", "add", host)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", host).Run() })
	run("ip", "netns", "add", peer)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", peer).Run() })
	run("ip", "-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer)
	run("ip", "-n", host, "addr", "add", "10.77.9.1/24", "dev", "eth0")
	run("ip", "-n", peer, "addr", "add", "10.77.9.2/24", "dev", "eth0")
	run("ip", "netns", "exec", peer, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1")
	run("ip", "-n", host, "link", "set", "eth0", "up")
	run("ip", "-n", peer, "link", "set", "eth0", "up")

	child := func(action string) {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", host, os.Args[0], "-test.run", "^TestLinkInNamespace$", "-test.count=1")
		cmd.Env = append(os.Environ(), "HAPLANE_VIP_ACTION="+action)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s in %s: %v\n%s", action, host, err, out)
		}
	}
	child("take")
	if addrs := run("ip", "-n", host, "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, "10.77.9.100/32") {
		t.Fatalf("after Take: %s", addrs)
	}
	mac := strings.Fields(run("ip", "-n", host, "-o", "link", "show", "dev", "eth0"))
	var hw string
	for i, f := range mac {
		if f == "link/ether" && i+1 < len(mac) {
			hw = mac[i+1]
		}
	}
	var neigh string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if neigh = run("ip", "-n", peer, "neigh", "show", "10.77.9.100"); strings.Contains(neigh, hw) {
			break
		}
	}
	if hw == "" || !strings.Contains(neigh, hw) {
		t.Errorf("the peer maps the VIP to %q after the announcement, want the host's MAC %s", strings.TrimSpace(neigh), hw)
	}
	child("release")
	if addrs := run("ip", "-n", host, "-o", "addr", "show", "dev", "eth0"); strings.Contains(addrs, "10.77.9.100") {
		t.Fatalf("after Release: %s", addrs)
	}
}

func TestNewRefusesOddAddresses(t *testing.T) {
	for _, a := range []netip.Addr{{}, netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("fe80::1%eth0")} {
		if _, err := New("eth0", []netip.Addr{a}); err == nil {
			t.Errorf("New accepted %v", a)
		}
	}
}
