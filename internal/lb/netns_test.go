package lb

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireRoot skips tests that create network namespaces when not root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and veth links")
	}
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// netnsHost is a network namespace joined to this one by a veth pair, with
// 10.77.4.1 on our side and 10.77.4.2 (plus any extra addresses) inside.
type netnsHost struct {
	name, hostLink, nsLink string
}

func newNetnsHost(t *testing.T, extra ...string) *netnsHost {
	t.Helper()
	requireRoot(t)
	id := os.Getpid() % 100000
	h := &netnsHost{name: fmt.Sprintf("h4lb%d", id), hostLink: fmt.Sprintf("h4lba%d", id), nsLink: fmt.Sprintf("h4lbb%d", id)}
	ipCmd(t, "netns", "add", h.name)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", h.name).Run()
		exec.Command("ip", "link", "del", h.hostLink).Run()
	})
	ipCmd(t, "link", "add", h.hostLink, "type", "veth", "peer", "name", h.nsLink, "netns", h.name)
	ipCmd(t, "addr", "add", "10.77.4.1/24", "dev", h.hostLink)
	ipCmd(t, "link", "set", h.hostLink, "up")
	ipCmd(t, "-n", h.name, "addr", "add", "10.77.4.2/24", "dev", h.nsLink)
	for _, a := range extra {
		ipCmd(t, "-n", h.name, "addr", "add", a+"/24", "dev", h.nsLink)
	}
	ipCmd(t, "-n", h.name, "link", "set", h.nsLink, "up")
	ipCmd(t, "-n", h.name, "link", "set", "lo", "up")
	return h
}

// listen opens a TCP listener inside the namespace: the socket keeps the
// namespace it was created in after the thread switches back.
func (h *netnsHost) listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := h.in(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen in %s: %v", h.name, err)
	}
	return ln
}

// dial connects from inside the namespace.
func (h *netnsHost) dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := h.in(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
		t.Fatalf("dial from %s: %v", h.name, err)
	}
	return c
}

// in runs fn on a thread inside the namespace; sockets it makes stay
// there.
func (h *netnsHost) in(fn func() error) error {
	type res struct {
		err error
	}
	ch := make(chan res)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + h.name)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine
			// rather than run other code in the wrong namespace.
			ch <- res{err: fmt.Errorf("restore namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{ferr}
	}()
	return (<-ch).err
}

// TestUnreachableBackendBoundedWait takes a backend's link down (the
// backend is in its own namespace): connects to it now time out instead of
// being refused, and still no client waits more than 1s.
func TestUnreachableBackendBoundedWait(t *testing.T) {
	h := newNetnsHost(t)
	pki := newTestPKI(t)
	far := startTLSBackend(t, pki, h.listen(t, "10.77.4.2:0"), "far")
	near := startTLSBackend(t, pki, listenLoopback(t), "near")
	// A short suspect period so the dead backend is retried (and times
	// out again) several times during the run.
	l := startLB(t, Config{Backends: []string{far.addr(), near.addr()}, SuspectFor: 700 * time.Millisecond})
	c := newClient(pki, l.addr())
	seen := map[string]bool{}
	for range 4 {
		name, err := c.get()
		if err != nil {
			t.Fatal(err)
		}
		seen[name] = true
	}
	if !seen["far"] || !seen["near"] {
		t.Fatalf("both backends should answer before the link goes down: %v", seen)
	}

	ipCmd(t, "-n", h.name, "link", "set", h.nsLink, "down")
	var worst atomic.Int64
	var n atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(3 * time.Second)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(pki, l.addr())
			for i := 0; i < 300 && time.Now().Before(end); i++ {
				start := time.Now()
				name, err := c.get()
				el := time.Since(start)
				if err != nil {
					t.Errorf("request failed with the far link down: %v", err)
					return
				}
				if name != "near" {
					t.Errorf("answered by %q with its link down", name)
				}
				n.Add(1)
				for {
					w := worst.Load()
					if int64(el) <= w || worst.CompareAndSwap(w, int64(el)) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	st := l.Backends()
	t.Logf("%d requests, slowest %v, connect timeouts to the far backend %d, retries %d",
		n.Load(), time.Duration(worst.Load()), st[0].Failures, l.retries.Load())
	if w := time.Duration(worst.Load()); w > time.Second {
		t.Errorf("a client waited %v, want at most 1s", w)
	}
	if st[0].Failures < 2 {
		t.Errorf("far backend tried %d times, want the suspect period to expire and retry", st[0].Failures)
	}
}

// TestShutdownEndsSessionsOfGoneClients: a client that vanished (its link
// down, as a client whose packets now reach the VIP's new holder) does not
// hold a shutdown until its deadline: the drain probes clients, and
// Shutdown returns once the dead session ended, while a live session
// would still be waited for.
func TestShutdownEndsSessionsOfGoneClients(t *testing.T) {
	h := newNetnsHost(t)
	echo := listenLoopback(t)
	echoServer(t, echo)
	l, err := New(Config{Frontends: []string{"10.77.4.1:0"}, Backends: []string{echo.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	go l.Serve(t.Context())
	c := h.dial(t, l.addr())
	defer c.Close()
	roundTrip(t, c)
	ipCmd(t, "-n", h.name, "link", "set", h.nsLink, "down")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = l.Shutdown(ctx)
	took := time.Since(start)
	t.Logf("shutdown with a vanished client took %v: %v", took.Round(time.Millisecond), err)
	if err != nil || took > 6*time.Second {
		t.Errorf("shutdown took %v (%v), want it to end the dead session within about 3s", took, err)
	}
}
