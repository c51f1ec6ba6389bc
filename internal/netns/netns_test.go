package netns

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if err := RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

func testPrefix() string { return fmt.Sprintf("hpt%d", os.Getpid()%100000) }

func ping(h *Host, to netip.Addr) error {
	out, err := h.Command("ping", "-c", "1", "-W", "1", to.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func TestNetHostsLinkAndSweep(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("skipping: ping (iputils-ping) is not installed")
	}
	n, err := NewNet(testPrefix())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	a, err := n.AddHost("a", netip.MustParseAddr("10.77.2.1"), 24)
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddHost("b", netip.MustParseAddr("10.77.2.2"), 24)
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(a, b.Addr); err != nil {
		t.Fatalf("a cannot reach b: %v", err)
	}
	if err := b.SetLink(false); err != nil {
		t.Fatal(err)
	}
	if err := ping(a, b.Addr); err == nil {
		t.Fatal("a reaches b with b's link down")
	}
	if err := b.SetLink(true); err != nil {
		t.Fatal(err)
	}
	if err := ping(a, b.Addr); err != nil {
		t.Fatalf("a cannot reach b after link up: %v", err)
	}
	out, _ := exec.Command("ip", "netns", "exec", a.NS, "sysctl", "-n", "net.ipv4.conf.eth0.arp_accept").Output()
	if strings.TrimSpace(string(out)) != "1" {
		t.Errorf("arp_accept = %q, want 1", out)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	list, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(list), n.Prefix+"-") {
		t.Fatalf("namespaces left after Close:\n%s", list)
	}
}

// A crashed lab leaves no state file, so nothing knows the PIDs of what
// ran in its namespaces: Sweep must find and stop them itself, or they
// outlive their (deleted) namespace. One process ignores SIGTERM, so the
// SIGKILL after the grace period is exercised too.
func TestSweepStopsProcessesLeftInNamespaces(t *testing.T) {
	requireRoot(t)
	n, err := NewNet(testPrefix() + "s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	h, err := n.AddHost("a", netip.MustParseAddr("10.77.2.1"), 24)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	for _, script := range []string{"exec sleep 60", "trap '' TERM; sleep 60 & wait"} {
		c := h.Command("sh", "-c", script)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	}
	waited := make(chan error, len(cmds))
	for _, c := range cmds {
		go func() { waited <- c.Wait() }()
	}
	// Not the lab's (no mark): in the namespace, but Sweep must leave it
	// alone, as it would a test whose main thread entered the namespace.
	other := exec.Command("ip", "netns", "exec", h.NS, "sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	otherDone := make(chan error, 1)
	go func() { otherDone <- other.Wait() }()
	t.Cleanup(func() { _ = other.Process.Kill(); <-otherDone })
	time.Sleep(200 * time.Millisecond) // let ip netns exec become the shells
	start := time.Now()
	if err := sweep(n.Prefix, time.Second); err != nil {
		t.Fatal(err)
	}
	for range cmds {
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			t.Fatal("a process in the swept namespace still runs")
		}
	}
	t.Logf("swept in %s", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-otherDone:
		otherDone <- err
		t.Fatalf("Sweep stopped a process that is not the lab's: %v", err)
	default:
	}
	list, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(list), n.Prefix+"-") {
		t.Fatalf("namespaces left after Sweep:\n%s", list)
	}
}
