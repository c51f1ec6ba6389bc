package lb

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haplane/haplane/internal/testutil/testbuf"
)

// TestLoopEngineOwnsSessions checks that the event loops accept and hold
// the sessions: the frontend is a loop listener and an open session sits
// in a loop's table, attached to its backend.
func TestLoopEngineOwnsSessions(t *testing.T) {
	echo := listenLoopback(t)
	echoServer(t, echo)
	l := startLB(t, Config{Backends: []string{echo.Addr().String()}})
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c)
	var inLoop int
	lps, err := startLoops(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, lp := range lps {
		lp.mu.Lock()
		for _, ls := range lp.conns {
			if ls.l == l && ls.attached != nil {
				inLoop++
			}
		}
		lp.mu.Unlock()
	}
	l.mu.Lock()
	nll := len(l.loopLns)
	l.mu.Unlock()
	if nll != 1 || inLoop != 1 {
		t.Errorf("%d loop listeners and %d sessions started in a loop; want 1 and 1", nll, inLoop)
	}
}

// TestBackendByName: backends given by host name, not IP literals, are
// resolved when they join the pool; the loops connect to the addresses,
// the sessions work both ways, and round robin alternates.
func TestBackendByName(t *testing.T) {
	var backends []string
	for range 2 {
		echo := listenLoopback(t)
		echoServer(t, echo)
		backends = append(backends, net.JoinHostPort("localhost", strconv.Itoa(echo.Addr().(*net.TCPAddr).Port)))
	}
	l := startLB(t, Config{Backends: backends})
	for range 4 {
		got, err := exchange(t, l.addr(), "by name")
		if err != nil || got != "by namebye" { // echoServer says bye after the client's EOF
			t.Fatalf("through a backend by name: %q %v", got, err)
		}
	}
	for _, st := range l.Backends() {
		if st.Total != 2 || st.BytesIn != 14 || st.BytesOut != 20 {
			t.Errorf("backend by name: %+v; want 2 of the 4 sessions (round robin), 14 bytes in and 20 out", st)
		}
	}
	if r := l.retries.Load(); r != 0 {
		t.Errorf("%d retries counted, want 0 (no connect failed)", r)
	}
}

// TestBackendAddresses: a backend whose name has several addresses is
// tried on each in turn before it counts as failed (the first refusing
// here), and later sessions start at the one that accepted; a name that
// does not resolve is a failed backend, and the client goes to another.
func TestBackendAddresses(t *testing.T) {
	echo := listenLoopback(t)
	echoServer(t, echo)
	refused := listenLoopback(t)
	refusedAddr := refused.Addr().(*net.TCPAddr).AddrPort()
	refused.Close()
	good := echo.Addr().(*net.TCPAddr).AddrPort()
	name := net.JoinHostPort("localhost", strconv.Itoa(int(good.Port())))
	l := startLB(t, Config{Backends: []string{name}})
	b := (*l.pool.Load())[0]
	aps := []netip.AddrPort{refusedAddr, good}
	b.aps.Store(&aps)
	for range 2 {
		if got, err := exchange(t, l.addr(), "two"); err != nil || got != "twobye" {
			t.Fatalf("through a backend with a refusing address first: %q %v", got, err)
		}
	}
	if st := l.Backends()[0]; st.Total != 2 || st.Failures != 0 || st.Suspect {
		t.Errorf("backend after its first address refused: %+v; want 2 sessions, no failure, not suspect", st)
	}
	if p := b.pref.Load(); p != 1 {
		t.Errorf("preferred address %d, want 1 (the one that accepted)", p)
	}

	l2 := startLB(t, Config{Backends: []string{"haplane-test-no-such-host.invalid:443", echo.Addr().String()}})
	for range 2 {
		if got, err := exchange(t, l2.addr(), "x"); err != nil || got != "xbye" {
			t.Fatalf("with an unresolvable backend in the pool: %q %v", got, err)
		}
	}
	if st := l2.Backends()[0]; st.Total != 0 || st.Failures == 0 {
		t.Errorf("unresolvable backend: %+v; want no session and a failure", st)
	}
}

// exchange sends msg on a new connection to addr, half-closes, and reads
// the answer to its end.
func exchange(t *testing.T, addr, msg string) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, msg)
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	return string(got), err
}

// TestHandshakeHoldsClientFIN: a client that sends its ClientHello and
// at once half-closes keeps its FIN at the proxy until the backend
// answers. A backend that closes when it sees the FIN first (many TLS
// servers do) is otherwise taken for one that failed the handshake.
func TestHandshakeHoldsClientFIN(t *testing.T) {
	ln := listenLoopback(t)
	t.Cleanup(func() { ln.Close() })
	sawFIN := make(chan bool, 1)
	helloAt := make(chan time.Time, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		if _, err := c.Read(buf); err != nil {
			return
		}
		helloAt <- time.Now()
		// A FIN that came with or right after the hello: give up on it.
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(buf); err == io.EOF {
			sawFIN <- false
			return
		}
		c.SetReadDeadline(time.Time{})
		io.WriteString(c, "server hello")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Read(buf)
		sawFIN <- err == io.EOF // the held FIN, passed on after the answer
	}()
	l := startLB(t, Config{Backends: []string{ln.Addr().String()}})
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	hello := append([]byte{0x16, 0x03, 0x01, 0x00, 0x04}, "abcd"...) // one whole handshake record
	// The hello and the FIN in one segment, so the load balancer knows of
	// the FIN when it reads the hello (MSG_MORE holds the bytes for the
	// shutdown).
	rc, _ := c.(*net.TCPConn).SyscallConn()
	_ = rc.Control(func(fd uintptr) { _ = unix.Sendto(int(fd), hello, unix.MSG_MORE, nil) })
	c.(*net.TCPConn).CloseWrite()
	sent := time.Now()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "server hello" {
		t.Errorf("client got %q %v, want the backend's answer", got, err)
	}
	select {
	case ok := <-sawFIN:
		if !ok {
			t.Error("the backend saw the client's FIN before it answered, or never")
		}
	case <-time.After(5 * time.Second):
		t.Error("backend never finished")
	}
	// The hello is passed on at once, not held with the FIN: bytes sent
	// with MSG_MORE and no FIN after them wait in the kernel for its
	// window probe timer, 200ms or more. (The bound is for that stall,
	// not a speed: a loopback hop takes microseconds.)
	select {
	case at := <-helloAt:
		if d := at.Sub(sent); d > 150*time.Millisecond {
			t.Errorf("the backend got the hello %v after the client sent it; held in the kernel?", d.Round(time.Millisecond))
		}
	default:
		t.Error("the backend never read the hello")
	}
	if r := l.replays.Load(); r != 0 {
		t.Errorf("%d replays, want 0", r)
	}
}

// TestIPv6 proxies from an IPv6 frontend to an IPv6 backend (the raw
// connect builds a sockaddr_in6).
func TestIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	echoServer(t, ln)
	l := startLB(t, Config{Frontends: []string{"[::1]:0"}, Backends: []string{ln.Addr().String()}})
	c, err := net.Dial("tcp6", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c)
}

// TestAcceptOutOfDescriptors: with the process out of descriptors the
// frontend backs off instead of spinning on its level-triggered event or
// giving up, and serves again once descriptors are back.
func TestAcceptOutOfDescriptors(t *testing.T) {
	echo := listenLoopback(t)
	echoServer(t, echo)
	var logs testbuf.Buffer
	l := startLB(t, Config{Backends: []string{echo.Addr().String()}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	// Serving first (Serve's set-up needs descriptors too).
	first, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, first)
	first.Close()
	// Its descriptors (the proxy's two, the echo server's) must be closed
	// before the holes are filled, or the accept below finds one.
	waitFor(t, "the first session closed", func() bool { return l.Backends()[0].Active == 0 })
	time.Sleep(100 * time.Millisecond)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// The limit is on descriptor numbers: fill the holes below the
	// highest one in use, then leave one number to spare. The client's
	// socket takes it, and the proxy's accept finds none left.
	top := fillFDHoles(t)
	low := lim
	low.Cur = uint64(top + 2)
	var before, after unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &before)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(500 * time.Millisecond)
	unix.Getrusage(unix.RUSAGE_SELF, &after)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	t.Logf("CPU used in 500ms out of descriptors: %v; log:\n%s", cpu, logs.String())
	if cpu > 250*time.Millisecond {
		t.Errorf("the proxy used %v of CPU in 500ms out of descriptors: it spins on the listener", cpu)
	}
	if !strings.Contains(logs.String(), "too many open files") {
		t.Errorf("no accept warning logged:\n%s", logs.String())
	}
	roundTrip(t, c)
}

// fillFDHoles opens /dev/null on every free descriptor number below the
// highest one in use (closed at cleanup) and returns that highest number.
func fillFDHoles(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	top := 0
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			top = max(top, n)
		}
	}
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if fd >= top {
			return fd
		}
	}
}

// TestIdleSessionsGiveBackPipes: a session that spliced a large answer
// and then went quiet (a watch after a big list) gives its pipe back to
// the pool within the sweep, so idle sessions hold no pipe descriptors.
func TestIdleSessionsGiveBackPipes(t *testing.T) {
	const n, size = 10, 1 << 20
	ln := listenLoopback(t)
	t.Cleanup(func() { ln.Close() })
	done := make(chan struct{})
	defer close(done) // before startLB's cleanup waits for the sessions
	serveConns(ln, func(c net.Conn) {
		c.Write(make([]byte, size))
		<-done // then quiet, and kept open
	})
	l := startLB(t, Config{Backends: []string{ln.Addr().String()}})
	for range n {
		c, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, size)); err != nil {
			t.Fatal(err)
		}
	}
	// Two sweeps: one notes the quiet sessions, the next takes their
	// pipes. Then the pool drops them at garbage collection.
	time.Sleep(2*pipeSweep + 500*time.Millisecond)
	pipes := 0
	for range 20 {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
		if pipes = countPipes(t); pipes == 0 {
			break
		}
	}
	if st := l.Backends(); st[0].Active != n {
		t.Fatalf("%d sessions open, want %d", st[0].Active, n)
	}
	if pipes > 4 {
		t.Errorf("%d pipe descriptors open with %d quiet sessions, want (nearly) none", pipes, n)
	}
}

func countPipes(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "pipe:") {
			n++
		}
	}
	return n
}

// segsIn is the number of TCP segments c has received, SYN included.
func segsIn(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return info.Segs_in
}

// TestLoopSegmentsPerShortSession counts the segments of a short session
// on both sides of the loop engine, which saves two of them:
//   - with the TLS handshake watch on (the default: clients speak first)
//     the backend's SYN-ACK is acknowledged with the client's first
//     bytes, so the backend has received 2 segments (SYN, then the bytes)
//     when it reads them, not 3; with the watch off the ACK goes at once,
//     so a backend that speaks first is not held;
//   - a backend's last bytes and its FIN that reach the load balancer
//     together leave for the client together: the client receives the
//     SYN-ACK, the ACK of its request, and the answer with the FIN (3),
//     not 4.
func TestLoopSegmentsPerShortSession(t *testing.T) {
	for _, tt := range []struct {
		name        string
		handshake   time.Duration
		backendSegs uint32
	}{
		{"client speaks first", 0, 2},
		{"handshake watch off", -1, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			be := listenLoopback(t)
			got := make(chan uint32, 1)
			serveConns(be, func(c net.Conn) {
				defer c.Close()
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err != nil {
					got <- 0
					return
				}
				got <- segsIn(t, c)
				// The answer and the FIN in one segment (MSG_MORE holds
				// the bytes for the shutdown that follows).
				rc, _ := c.(*net.TCPConn).SyscallConn()
				_ = rc.Control(func(fd uintptr) { _ = unix.Sendto(int(fd), []byte("pong"), unix.MSG_MORE, nil) })
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			})
			l := startLB(t, Config{Backends: []string{be.Addr().String()}, HandshakeTimeout: tt.handshake})
			c, err := net.Dial("tcp", l.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			answer, err := io.ReadAll(c)
			if err != nil || string(answer) != "pong" {
				t.Fatalf("read %q, %v; want pong and EOF", answer, err)
			}
			if n := <-got; n != tt.backendSegs {
				t.Errorf("backend had %d segments when the request arrived; want %d", n, tt.backendSegs)
			}
			if n := segsIn(t, c); n != 3 {
				t.Errorf("client received %d segments (SYN-ACK, ACK, answer+FIN is 3); want 3", n)
			}
		})
	}
}

// TestLoopsShareConnections opens connections in a burst and checks that
// the loops hold about equal shares of them. Every loop listens on the
// frontend, and without a rule one loop can end up with nearly all of a
// burst (63 of 64 was seen), one core doing the work of all.
func TestLoopsShareConnections(t *testing.T) {
	lps, err := startLoops(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(lps) < 2 {
		t.Fatalf("%d event loops; want one per GOMAXPROCS, at least 2 (GOMAXPROCS %d)", len(lps), runtime.GOMAXPROCS(0))
	}
	echo := listenLoopback(t)
	echoServer(t, echo)
	l := startLB(t, Config{Backends: []string{echo.Addr().String()}})
	const n = 64
	var wg sync.WaitGroup
	conns := make(chan net.Conn, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", l.addr())
			if err != nil {
				t.Error(err)
				return
			}
			conns <- c
			roundTrip(t, c)
		}()
	}
	wg.Wait()
	close(conns)
	defer func() {
		for c := range conns {
			c.Close()
		}
	}()
	var counts []int
	for _, lp := range lps {
		k := 0
		lp.mu.Lock()
		for _, ls := range lp.conns {
			if ls.l == l {
				k++
			}
		}
		lp.mu.Unlock()
		counts = append(counts, k)
	}
	lo, hi, sum := n, 0, 0
	for _, k := range counts {
		lo, hi, sum = min(lo, k), max(hi, k), sum+k
	}
	if sum != n {
		t.Fatalf("loops hold %v sessions, %d in all; want %d", counts, sum, n)
	}
	if hi > lo+shareSlack(lo)+1 {
		t.Errorf("sessions per loop %v: more apart than the share rule allows (%d)", counts, shareSlack(lo))
	}
}
