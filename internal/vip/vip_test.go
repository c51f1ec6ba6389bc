//go:build linux

package vip

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
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
		take := func() error { return l.Take(0) }
		steps := map[string][]func() error{"take": {take, take, l.Announce}, "release": {l.Release, l.Release}}[act]
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
	host, peer := newNetns(t, "a"), newNetns(t, "b")
	run(t, "ip", "-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer)
	run(t, "ip", "-n", host, "addr", "add", "10.77.9.1/24", "dev", "eth0")
	run(t, "ip", "-n", peer, "addr", "add", "10.77.9.2/24", "dev", "eth0")
	run(t, "ip", "netns", "exec", peer, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1")
	run(t, "ip", "-n", host, "link", "set", "eth0", "up")
	run(t, "ip", "-n", peer, "link", "set", "eth0", "up")

	child := func(action string) {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", host, os.Args[0], "-test.run", "^TestLinkInNamespace$", "-test.count=1")
		cmd.Env = append(os.Environ(), "HAPLANE_VIP_ACTION="+action)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s in %s: %v\n%s", action, host, err, out)
		}
	}
	child("take")
	if addrs := run(t, "ip", "-n", host, "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, "10.77.9.100/32") {
		t.Fatalf("after Take: %s", addrs)
	}
	mac := strings.Fields(run(t, "ip", "-n", host, "-o", "link", "show", "dev", "eth0"))
	var hw string
	for i, f := range mac {
		if f == "link/ether" && i+1 < len(mac) {
			hw = mac[i+1]
		}
	}
	var neigh string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if neigh = run(t, "ip", "-n", peer, "neigh", "show", "10.77.9.100"); strings.Contains(neigh, hw) {
			break
		}
	}
	if hw == "" || !strings.Contains(neigh, hw) {
		t.Errorf("the peer maps the VIP to %q after the announcement, want the host's MAC %s", strings.TrimSpace(neigh), hw)
	}
	child("release")
	if addrs := run(t, "ip", "-n", host, "-o", "addr", "show", "dev", "eth0"); strings.Contains(addrs, "10.77.9.100") {
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
	// Each case gets a namespace of its own with an eth0 (a veth) holding the
	// addresses in order.
	setup := func(t *testing.T, name string, addrs ...string) string {
		t.Helper()
		ns := newNetns(t, name)
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

func TestLifetimeSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want uint32
	}{
		{0, Forever}, {-time.Second, Forever}, {time.Nanosecond, 1}, {time.Second, 1},
		{1500 * time.Millisecond, 2}, {2 * time.Second, 2}, {time.Hour, 3600}, {1 << 62, Forever - 1},
	} {
		if got := LifetimeSeconds(tc.d); got != tc.want {
			t.Errorf("LifetimeSeconds(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestLifetime: an address taken with a lifetime of 1s stays while it is
// renewed (Take again every 250ms, over 3.5 lifetimes), and leaves the link
// by itself within 2s of the last renewal once its holder is gone (the
// child process exits, as a killed agent would), IPv4 and IPv6 alike. A
// Take with no lifetime makes a renewed address permanent again.
func TestLifetime(t *testing.T) {
	if spec := os.Getenv("HAPLANE_VIP_LIFETIME"); spec != "" {
		// The child, inside the namespace: "lifetime renewFor".
		f := strings.Fields(spec)
		lt, _ := time.ParseDuration(f[0])
		renewFor, _ := time.ParseDuration(f[1])
		l, err := New("eth0", []netip.Addr{netip.MustParseAddr("10.77.9.100"), netip.MustParseAddr("fd77:909::100")})
		if err != nil {
			t.Fatal(err)
		}
		end := time.Now().Add(renewFor)
		for {
			if err := l.Take(lt); err != nil {
				t.Fatal(err)
			}
			if !time.Now().Before(end) {
				// When the last renewal was done, for the parent.
				fmt.Fprintf(os.Stderr, "last-renew %d\n", time.Now().UnixNano())
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root for network namespaces")
	}
	ns := newNetns(t, "l")
	run(t, "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", ns, "link", "set", "eth1", "up")
	// held reports which of the two VIPs are on eth0, and their valid
	// lifetime as ip shows it ("1sec", "forever").
	held := func() (v4, v6 string) {
		out, _ := exec.Command("ip", "-n", ns, "-o", "addr", "show", "dev", "eth0").Output()
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			lft := ""
			for i := range f {
				if f[i] == "valid_lft" && i+1 < len(f) {
					lft = f[i+1]
				}
			}
			if slices.Contains(f, "10.77.9.100/32") {
				v4 = lft
			}
			if slices.Contains(f, "fd77:909::100/128") {
				if slices.Contains(f, "tentative") {
					t.Errorf("IPv6 VIP is tentative (duplicate address detection): %s", line)
				}
				v6 = lft
			}
		}
		return v4, v6
	}
	// child runs the holder; its error channel gets the exit status and
	// the time of the last renewal, which the child reports.
	var lastRenew time.Time
	child := func(spec string) chan error {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestLifetime$", "-test.count=1")
		cmd.Env = append(os.Environ(), "HAPLANE_VIP_LIFETIME="+spec)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			err := cmd.Wait()
			for _, line := range strings.Split(out.String(), "\n") {
				if ns, ok := strings.CutPrefix(line, "last-renew "); ok {
					n, _ := strconv.ParseInt(ns, 10, 64)
					lastRenew = time.Unix(0, n)
				}
			}
			if err != nil {
				err = fmt.Errorf("%w\n%s", err, out.String())
			}
			done <- err
		}()
		return done
	}

	const renewFor = 3500 * time.Millisecond
	done := child("1s " + renewFor.String())
	// While renewed: present all along, with a finite lifetime.
	var seen, went4, went6 bool
	var exited, went time.Time
	deadline := time.Now().Add(renewFor + 5*time.Second)
	for exited.IsZero() && time.Now().Before(deadline) {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("renewing child: %v", err)
			}
			exited = time.Now()
			continue
		default:
		}
		v4, v6 := held()
		if v4 != "" || v6 != "" {
			seen = true
		}
		if seen && (v4 == "" || v6 == "") && went.IsZero() {
			// Gone while renewed, or expired after the last renewal
			// while the child was still exiting (a slow exit on a busy
			// machine): which one, the child's last renewal tells.
			went, went4, went6 = time.Now(), v4 == "", v6 == ""
		}
		if v4 == "forever" || v6 == "forever" {
			t.Fatalf("lifetimes %q/%q, want finite", v4, v6)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !seen || exited.IsZero() || lastRenew.IsZero() {
		t.Fatalf("child never held the addresses (%v) or did not exit in time", seen)
	}
	t.Logf("child exited %v after its last renewal", exited.Sub(lastRenew))
	if !went.IsZero() && went.Before(lastRenew.Add(500*time.Millisecond)) {
		t.Fatalf("while renewed, an address went (IPv4 %v, IPv6 %v) %v before the last renewal's lifetime could end", went4, went6, lastRenew.Add(time.Second).Sub(went))
	}
	// Renewal stopped: gone within 2s of the last one.
	var gone4, gone6 time.Duration
	if went4 {
		gone4 = went.Sub(lastRenew)
	}
	if went6 {
		gone6 = went.Sub(lastRenew)
	}
	for time.Since(lastRenew) < 4*time.Second && (gone4 == 0 || gone6 == 0) {
		v4, v6 := held()
		if v4 == "" && gone4 == 0 {
			gone4 = time.Since(lastRenew)
		}
		if v6 == "" && gone6 == 0 {
			gone6 = time.Since(lastRenew)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("after the last renewal: IPv4 gone in %v, IPv6 in %v", gone4, gone6)
	for fam, g := range map[string]time.Duration{"IPv4": gone4, "IPv6": gone6} {
		if g == 0 || g >= 2*time.Second {
			t.Errorf("%s VIP still there %v after the last renewal, want gone in < 2s", fam, cmp(g, 4*time.Second))
		}
	}

	// A lifetime of zero: permanent again, also for an address renewed
	// with a lifetime before.
	done = child("1s 0s")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done = child("0s 0s")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if v4, v6 := held(); v4 != "forever" || v6 != "forever" {
		t.Errorf("after Take(0): lifetimes %q/%q, want forever", v4, v6)
	}
}

// cmp is g, or over when g is zero (never seen gone).
func cmp(g, over time.Duration) string {
	if g == 0 {
		return "over " + over.String()
	}
	return strconv.Quote(g.String())
}

// run runs a command and returns its output, failing the test if it fails.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}

// newNetns makes a network namespace named for this test binary and
// suffix (unique beside other packages' tests), deleted when the test
// ends, and returns its name.
func newNetns(t *testing.T, suffix string) string {
	t.Helper()
	ns := fmt.Sprintf("hpv%d-%s", os.Getpid()%100000, suffix)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}
