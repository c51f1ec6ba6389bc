//go:build linux

package vip

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
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

// TestReleaseRemovesStaleCopies: a copy of the VIP with any prefix length
// (added by hand as /24, say, or /64 for IPv6) goes at Release, as the /32
// or /128 Take adds does; the node's own address and a neighbour of the
// VIP in the same subnet stay. A copy that is the primary address of its
// subnet is not removed while that would take the node's own (secondary)
// address with it, unless promote_secondaries is on.
func TestReleaseRemovesStaleCopies(t *testing.T) {
	if os.Getenv("HAPLANE_VIP_RELEASE") != "" {
		// The child, inside the namespace.
		var addrs []netip.Addr
		for _, s := range strings.Fields(os.Getenv("HAPLANE_VIP_RELEASE")) {
			addrs = append(addrs, netip.MustParseAddr(s))
		}
		l, err := New("eth0", addrs)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(); err != nil {
			t.Fatal(err)
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root for network namespaces")
	}
	run := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// Each case gets a namespace of its own with an eth0 (a veth) holding the
	// addresses in order.
	setup := func(t *testing.T, name string, addrs ...string) string {
		t.Helper()
		ns := fmt.Sprintf("hpv%d-%s", os.Getpid()%100000, name)
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		for _, a := range addrs {
			args := []string{"ip", "-n", ns, "addr", "add", a, "dev", "eth0"}
			if strings.Contains(a, ":") {
				args = append(args, "nodad")
			}
			run(t, args...)
		}
		return ns
	}
	release := func(ns string) (string, error) {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestReleaseRemovesStaleCopies$", "-test.count=1")
		cmd.Env = append(os.Environ(), "HAPLANE_VIP_RELEASE=10.77.9.100 fd77:909::100")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	addrs := func(t *testing.T, ns string) []string {
		var out []string
		for _, line := range strings.Split(run(t, "ip", "-n", ns, "-o", "addr", "show", "dev", "eth0"), "\n") {
			f := strings.Fields(line)
			if len(f) >= 4 && (f[2] == "inet" || f[2] == "inet6") && !strings.HasPrefix(f[3], "fe80:") {
				out = append(out, f[3])
			}
		}
		slices.Sort(out)
		return out
	}

	t.Run("any prefix length", func(t *testing.T) {
		ns := setup(t, "a", "10.77.9.1/24", "10.77.9.100/24", "10.77.9.100/32", "10.77.9.101/24", "10.77.9.100/16",
			"fd77:909::1/64", "fd77:909::100/64", "fd77:909::101/64")
		if out, err := release(ns); err != nil {
			t.Fatalf("Release: %v\n%s", err, out)
		}
		want := []string{"10.77.9.1/24", "10.77.9.101/24", "fd77:909::101/64", "fd77:909::1/64"}
		slices.Sort(want)
		if got := addrs(t, ns); !slices.Equal(got, want) {
			t.Errorf("after Release: %v, want %v", got, want)
		}
		// Nothing left to remove: not an error.
		if out, err := release(ns); err != nil {
			t.Fatalf("second Release: %v\n%s", err, out)
		}
	})
	t.Run("primary of its subnet", func(t *testing.T) {
		// The stale copy came first, so the node's own address is its
		// secondary: removing the copy would remove both.
		ns := setup(t, "p", "10.77.9.100/24", "10.77.9.1/24")
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=0")
		out, err := release(ns)
		if err == nil || !strings.Contains(out, "primary address of its subnet") {
			t.Errorf("Release of a primary copy with promote_secondaries off: %v\n%s", err, out)
		}
		if got := addrs(t, ns); !slices.Equal(got, []string{"10.77.9.1/24", "10.77.9.100/24"}) {
			t.Errorf("after a refused Release: %v, want both addresses kept", got)
		}
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1")
		if out, err := release(ns); err != nil {
			t.Fatalf("Release with promote_secondaries on: %v\n%s", err, out)
		}
		if got := addrs(t, ns); !slices.Equal(got, []string{"10.77.9.1/24"}) {
			t.Errorf("after Release with promote_secondaries on: %v, want the node's own address alone", got)
		}
	})
}
