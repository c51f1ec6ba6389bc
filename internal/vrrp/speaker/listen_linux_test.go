//go:build linux

package speaker

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestListenSetup opens the raw VRRP socket of each family on a veth link
// in a network namespace of the test's own, so that listenGroup's steps
// (shared by both families) run against a real kernel: a wrong option for
// one family fails here.
func TestListenSetup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("raw VRRP sockets and network namespaces need root: run as root")
	}
	ns := fmt.Sprintf("hpspk-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip("-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
	ip("-n", ns, "addr", "add", "10.77.250.1/24", "dev", "va")
	ip("-n", ns, "link", "set", "va", "up")
	ip("-n", ns, "link", "set", "vb", "up")

	// The sockets are made on a thread that entered the namespace; the
	// thread is not given back to the runtime (it exits with the goroutine).
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			f, err := os.Open("/run/netns/" + ns)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("setns: %w", err)
			}
			c, err := ListenIPv4("va", netip.MustParseAddr("10.77.250.1"))
			if err != nil {
				return fmt.Errorf("ListenIPv4: %w", err)
			}
			c.Close()
			// The link-local address comes with the link up; allow for it.
			var ll netip.Addr
			for deadline := time.Now().Add(5 * time.Second); ; {
				var c6 Conn
				c6, ll, err = ListenIPv6("va")
				if err == nil {
					c6.Close()
					break
				}
				if !strings.Contains(err.Error(), "link-local") || time.Now().After(deadline) {
					return fmt.Errorf("ListenIPv6: %w", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if !ll.IsLinkLocalUnicast() {
				return fmt.Errorf("ListenIPv6 sends from %v, want a link-local address", ll)
			}
			// lo has no link-local address: ListenIPv6 must say so.
			if _, _, err := ListenIPv6("lo"); err == nil || !strings.Contains(err.Error(), "link-local") {
				return fmt.Errorf("ListenIPv6 on lo: %v, want the missing link-local address", err)
			}
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
