package lb

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultyBackend accepts TCP connections and, once the client's first
// bytes arrived, either resets the connection (a backend that dies after
// the kernel accepted its clients) or says nothing (a hung one: SIGSTOP,
// a wedged process, whose kernel still accepts).
func faultyBackend(t *testing.T, mode string) (addr string, firstBytes func() int) {
	t.Helper()
	ln := listenLoopback(t)
	var mu sync.Mutex
	var conns []net.Conn
	n := 0
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil {
					return
				}
				mu.Lock()
				n++
				mu.Unlock()
				if mode == "reset" {
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			}()
		}
	}()
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestHandshakeReplay: a backend that resets its clients after reading
// their ClientHello, or never answers it, costs a TLS client nothing but
// the wait: the session moves to the healthy backend with the ClientHello
// replayed, and the TLS handshake, verified end to end, completes there.
func TestHandshakeReplay(t *testing.T) {
	for _, tt := range []struct {
		mode    string
		timeout time.Duration
	}{
		{"reset", 0},                       // default handshake timeout; the reset is immediate
		{"silent", 200 * time.Millisecond}, // the handshake timeout decides
	} {
		t.Run(tt.mode, func(t *testing.T) {
			pki := newTestPKI(t)
			bad, seen := faultyBackend(t, tt.mode)
			good := startTLSBackend(t, pki, listenLoopback(t), "good")
			// SuspectFor tiny: every connection tries the faulty backend
			// first again (round robin over two), so each replay is
			// exercised, not only the first.
			l := startLB(t, Config{Backends: []string{bad, good.addr()}, HandshakeTimeout: tt.timeout, SuspectFor: time.Nanosecond})
			c := newClient(pki, l.addr())
			const n = 10
			for i := range n {
				start := time.Now()
				name, err := c.get()
				if err != nil || name != "good" {
					t.Fatalf("request %d: %q %v", i, name, err)
				}
				if d := time.Since(start); tt.mode == "silent" && d > 3*time.Second {
					t.Errorf("request %d took %s", i, d)
				}
			}
			st := l.Backends()
			t.Logf("%s: %d ClientHellos reached the faulty backend, %d replays, failures %d", tt.mode, seen(), l.replays.Load(), st[0].Failures)
			if seen() == 0 || l.replays.Load() != uint64(seen()) || st[0].Failures != uint64(seen()) {
				t.Errorf("faulty backend saw %d ClientHellos, replays %d, failures %d: want all equal and > 0", seen(), l.replays.Load(), st[0].Failures)
			}
			waitFor(t, "every session closed", func() bool {
				st := l.Backends()
				return st[0].Active == 0 && st[1].Active == 0
			})
		})
	}
}

// TestHandshakeNoReplayForPlainBytes: what is not a TLS ClientHello is
// never sent twice; a client whose backend resets it sees the reset.
func TestHandshakeNoReplayForPlainBytes(t *testing.T) {
	bad, seen := faultyBackend(t, "reset")
	echo := listenLoopback(t)
	echoServer(t, echo)
	l := startLB(t, Config{Backends: []string{bad, echo.Addr().String()}, SuspectFor: time.Nanosecond})
	failed := 0
	for range 4 {
		got, _ := exchange(t, l.addr(), "POST /once HTTP/1.1\r\n\r\n")
		if !strings.HasPrefix(got, "POST /once") {
			failed++
		}
	}
	if failed != 2 || seen() != 2 || l.replays.Load() != 0 {
		t.Errorf("%d of 4 plain sessions failed, faulty backend saw %d, %d replays: want 2, 2, 0 (round robin, no replay)", failed, seen(), l.replays.Load())
	}
}

// TestHandshakeQuietClient: a client that waits for the server to speak
// first still gets the backend's greeting (after the short wait for the
// client's first bytes), and the session works both ways.
func TestHandshakeQuietClient(t *testing.T) {
	ln := listenLoopback(t)
	t.Cleanup(func() { ln.Close() })
	serveConns(ln, func(c net.Conn) {
		io.WriteString(c, "220 hello\n")
		io.Copy(c, c)
	})
	l := startLB(t, Config{Backends: []string{ln.Addr().String()}})
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "220 hello\n" {
		t.Fatalf("greeting: %q %v", buf, err)
	}
	roundTrip(t, c)
}

func TestTLSRecordLen(t *testing.T) {
	for _, tt := range []struct {
		in   []byte
		n    int
		isTL bool
	}{
		{nil, 0, false},
		{[]byte("GET / HTTP/1.1"), 0, false},
		{[]byte{0x16}, 5, true},
		{[]byte{0x16, 3}, 5, true},
		{[]byte{0x16, 2}, 0, false},
		{[]byte{0x16, 3, 1, 0x02, 0x00}, 5 + 512, true},
		{[]byte{0x16, 3, 1, 0, 0}, 0, false},       // empty record
		{[]byte{0x16, 3, 1, 0xff, 0xff}, 0, false}, // longer than a record may be
		{[]byte{0x17, 3, 3, 0, 10}, 0, false},      // application data
	} {
		n, ok := tlsRecordLen(tt.in)
		if n != tt.n || ok != tt.isTL {
			t.Errorf("tlsRecordLen(%v) = %d %v, want %d %v", tt.in, n, ok, tt.n, tt.isTL)
		}
	}
}
