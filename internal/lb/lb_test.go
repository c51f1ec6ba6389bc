package lb

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

func TestPolicies(t *testing.T) {
	mk := func(active ...int64) []*Backend {
		var bs []*Backend
		for i, a := range active {
			b := &Backend{addr: fmt.Sprintf("b%d", i)}
			b.active.Store(a)
			bs = append(bs, b)
		}
		return bs
	}
	tests := []struct {
		policy string
		active []int64
		picks  int
		want   string // addrs picked, in order
	}{
		{"roundrobin", []int64{0, 0, 0}, 6, "b0 b1 b2 b0 b1 b2"},
		{"roundrobin", []int64{9, 0, 5}, 3, "b0 b1 b2"}, // ignores load
		{"roundrobin", []int64{0}, 2, "b0 b0"},
		{"leastconn", []int64{3, 1, 2}, 2, "b1 b1"},
		{"leastconn", []int64{0, 0, 0}, 4, "b0 b1 b2 b0"}, // ties rotate
		{"leastconn", []int64{1, 0, 0}, 3, "b1 b1 b2"},
		{"leastconn", []int64{5}, 1, "b0"},
	}
	for _, tt := range tests {
		t.Run(tt.policy+fmt.Sprint(tt.active), func(t *testing.T) {
			p, err := NewPolicy(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			bs := mk(tt.active...)
			var got []string
			for range tt.picks {
				got = append(got, p.Select(bs).addr)
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("picks %q, want %q", g, tt.want)
			}
			if p.Select(nil) != nil {
				t.Error("Select(nil) != nil")
			}
		})
	}
	if _, err := NewPolicy("random"); err == nil {
		t.Error("unknown policy accepted")
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no frontend", Config{}, "no frontend"},
		{"bad frontend", Config{Frontends: []string{"x"}}, `"x"`},
		{"bad backend", Config{Frontends: []string{"127.0.0.1:0"}, Backends: []string{"1.2.3.4"}}, `"1.2.3.4"`},
		{"negative drain", Config{Frontends: []string{"127.0.0.1:0"}, Drain: -1}, "negative"},
		{"bad policy", Config{Frontends: []string{"127.0.0.1:0"}, Policy: "random"}, "random"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want it to mention %s", err, tt.want)
			}
		})
	}
}

// tlsBackend is a real HTTPS server on a listener we own, so it can be
// killed like a crashed process: listener closed, every connection reset.
type tlsBackend struct {
	name   string
	ln     net.Listener
	srv    *http.Server
	status atomic.Int32 // /readyz answer
	live   atomic.Int32 // /livez answer
	hits   atomic.Int64 // requests to /

	mu    sync.Mutex // protects conns
	conns map[net.Conn]struct{}
}

func startTLSBackend(t *testing.T, pki testPKI, ln net.Listener, name string) *tlsBackend {
	t.Helper()
	b := &tlsBackend{name: name, ln: ln, conns: map[net.Conn]struct{}{}}
	b.status.Store(200)
	b.live.Store(200)
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(b.status.Load())) })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(b.live.Load())) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		io.WriteString(w, name)
	})
	b.srv = &http.Server{
		Handler:   mux,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pki.server}},
		ConnState: func(c net.Conn, s http.ConnState) {
			b.mu.Lock()
			defer b.mu.Unlock()
			switch s {
			case http.StateNew:
				b.conns[c] = struct{}{}
			case http.StateClosed, http.StateHijacked:
				delete(b.conns, c)
			}
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	b.srv.SetKeepAlivesEnabled(false)
	go b.srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *tlsBackend) addr() string { return b.ln.Addr().String() }

// kill closes the listener and resets every open connection, as a crash.
func (b *tlsBackend) kill() int {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.conns)
	for c := range b.conns {
		if tc, ok := c.(*tls.Conn); ok {
			c = tc.NetConn()
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
	return n
}

// startTLSBackends starts n backends named b0, b1, ... on loopback.
func startTLSBackends(t *testing.T, pki testPKI, n int) (bs []*tlsBackend, addrs []string) {
	t.Helper()
	for i := range n {
		b := startTLSBackend(t, pki, listenLoopback(t), fmt.Sprint("b", i))
		bs = append(bs, b)
		addrs = append(addrs, b.addr())
	}
	return bs, addrs
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startLB runs a load balancer on 127.0.0.1 and stops it at cleanup.
func startLB(t testing.TB, cfg Config) *LB {
	t.Helper()
	if cfg.Frontends == nil {
		cfg.Frontends = []string{"127.0.0.1:0"}
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		l.Shutdown(sctx)
	})
	return l
}

func (l *LB) addr() string { return l.Addrs()[0].String() }

// client makes one HTTPS request per new connection through the proxy,
// verifying the backend's certificate end to end.
type client struct {
	hc *http.Client
	lb string
}

func newClient(pki testPKI, lbAddr string) *client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pki.pool, ServerName: "backend"},
		DisableKeepAlives: true,
	}
	return &client{hc: &http.Client{Transport: tr, Timeout: 5 * time.Second}, lb: lbAddr}
}

// get returns the name of the backend that answered.
func (c *client) get() (string, error) {
	resp, err := c.hc.Get("https://" + c.lb + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), nil
}

func TestProxyTLSAndSpread(t *testing.T) {
	pki := newTestPKI(t)
	bs, addrs := startTLSBackends(t, pki, 3)
	reg := prometheus.NewPedanticRegistry()
	l := startLB(t, Config{Backends: addrs, Registerer: reg})
	c := newClient(pki, l.addr())
	seen := map[string]int{}
	for range 30 {
		name, err := c.get()
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	for _, b := range bs {
		if seen[b.name] != 10 {
			t.Errorf("round robin: %v, want 10 each", seen)
		}
	}
	// Sessions end asynchronously after the client closes.
	waitFor(t, "sessions to end", func() bool {
		for _, s := range l.Backends() {
			if s.Active != 0 {
				return false
			}
		}
		return true
	})
	st := l.Backends()
	for _, s := range st {
		if s.Total != 10 || s.BytesIn == 0 || s.BytesOut == 0 || !s.InService {
			t.Errorf("backend status %+v", s)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"haplane_lb_backend_health", "haplane_lb_backend_active_sessions", "haplane_lb_backend_sessions_total",
		"haplane_lb_backend_connect_failures_total", "haplane_lb_backend_bytes_total", "haplane_lb_retries_total"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBackendKilledUnderLoad kills one of three backends while clients
// open a new TLS connection per request. It asserts, exactly:
//   - no request started after the kill fails (the refused connect is
//     retried on another backend within the same accept);
//   - every session the proxy had established with the killed backend
//     and that it did not answer either failed or was replayed on another
//     backend (it died before answering the ClientHello), and no request
//     failed elsewhere: failures ≤ its unanswered sessions ≤ failures +
//     replays. What can fail is a session the dead backend had begun to
//     answer (mid-handshake or mid-request), which no L4 proxy can save.
func TestBackendKilledUnderLoad(t *testing.T) {
	pki := newTestPKI(t)
	bs, addrs := startTLSBackends(t, pki, 3)
	l := startLB(t, Config{Backends: addrs})
	var killedAt atomic.Int64
	var ok, failedAfter, failedBefore, okKilled atomic.Int64
	var wg sync.WaitGroup
	const workers, perWorker = 8, 60
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(pki, l.addr())
			for range perWorker {
				start := time.Now().UnixNano()
				name, err := c.get()
				switch {
				case err == nil:
					ok.Add(1)
					if name == "b1" {
						okKilled.Add(1)
					}
				case killedAt.Load() != 0 && start > killedAt.Load():
					failedAfter.Add(1)
					t.Errorf("request started after the kill failed: %v", err)
				default:
					failedBefore.Add(1)
				}
			}
		}()
	}
	waitFor(t, "load", func() bool { return ok.Load() > 60 })
	inflight := bs[1].kill()
	killedAt.Store(time.Now().UnixNano())
	wg.Wait()
	t.Logf("ok %d, failed in-flight on the killed backend %d (it had %d sessions), failed after kill %d, retries %d",
		ok.Load(), failedBefore.Load(), inflight, failedAfter.Load(), l.retries.Load())
	// Each worker has one request in flight; only those the dead backend
	// was serving (accepted, or still in its listen backlog) can fail.
	if failedBefore.Load() > workers {
		t.Errorf("%d failures, more than the %d requests in flight at the kill", failedBefore.Load(), workers)
	}
	if bs[1].hits.Load() == 0 || bs[0].hits.Load() == 0 {
		t.Error("load did not reach the backends")
	}
	st := l.Backends()
	if st[1].Failures == 0 {
		t.Error("killed backend has no connect failure recorded")
	}
	// After the kill no session to it can be established (its listener is
	// closed), so its session total is final.
	lost, failed, replays := int64(st[1].Total)-okKilled.Load(), failedBefore.Load()+failedAfter.Load(), int64(l.replays.Load())
	t.Logf("killed backend: %d sessions, %d answered; %d requests failed, %d replayed elsewhere", st[1].Total, okKilled.Load(), failed, replays)
	if failed > lost {
		t.Errorf("%d requests failed, but the proxy had only %d sessions on the killed backend that did not answer: a failure was not on the killed backend", failed, lost)
	}
	if failed+replays < lost {
		t.Errorf("%d unanswered sessions on the killed backend, but only %d failed and %d were replayed: a session vanished", lost, failed, replays)
	}
}

// TestPassiveRetryAllDeadButOne: two of three backends refuse; every
// client still gets through, and each dead one is tried at most once per
// suspect period.
func TestPassiveRetry(t *testing.T) {
	pki := newTestPKI(t)
	live := startTLSBackend(t, pki, listenLoopback(t), "live")
	dead1, dead2 := listenLoopback(t), listenLoopback(t)
	dead1.Close()
	dead2.Close()
	l := startLB(t, Config{Backends: []string{dead1.Addr().String(), live.addr(), dead2.Addr().String()}, SuspectFor: time.Hour})
	c := newClient(pki, l.addr())
	for i := range 20 {
		name, err := c.get()
		if err != nil || name != "live" {
			t.Fatalf("request %d: %q %v", i, name, err)
		}
	}
	st := l.Backends()
	if st[0].Failures != 1 || st[2].Failures != 1 || !st[0].Suspect || !st[2].Suspect {
		t.Errorf("dead backends tried more than once or not suspect: %+v", st)
	}
	// With every backend failing the client is closed, not hung.
	l.SetBackends([]string{dead1.Addr().String()})
	if _, err := c.get(); err == nil {
		t.Error("request through a pool of dead backends succeeded")
	}
	if l.noneOK.Load() == 0 {
		t.Error("no-backend not counted")
	}
}

// serveConns accepts on ln until it is closed and runs fn on each
// connection in its own goroutine, closing the connection after.
func serveConns(ln net.Listener, fn func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fn(c)
			}()
		}
	}()
}

// echoServer is a plain TCP backend that echoes and reports half-closes.
func echoServer(t testing.TB, ln net.Listener) {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	serveConns(ln, func(c net.Conn) {
		io.Copy(c, c)
		// The client half-closed: answer after its EOF, proving the
		// reverse direction still flows.
		c.Write([]byte("bye"))
	})
}

func TestHalfClose(t *testing.T) {
	ln := listenLoopback(t)
	echoServer(t, ln)
	l := startLB(t, Config{Backends: []string{ln.Addr().String()}})
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := bytes.Repeat([]byte("x"), 1<<20)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(payload, "bye"...)) {
		t.Fatalf("got %d bytes, want %d + bye", len(got), len(payload))
	}
}

func TestIdleTimeout(t *testing.T) {
	ln := listenLoopback(t)
	echoServer(t, ln)
	l := startLB(t, Config{Backends: []string{ln.Addr().String()}, IdleTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Busy for 3 idle periods: one byte every 100ms in one direction only
	// keeps the session.
	buf := make([]byte, 1)
	var start time.Time // last activity
	for range 9 {
		c.Write([]byte("a"))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("active session closed: %v", err)
		}
		start = time.Now()
		time.Sleep(100 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(buf)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle session not closed: %v", err)
	}
	if el := time.Since(start); el < 250*time.Millisecond || el > 1500*time.Millisecond {
		t.Errorf("idle session closed %v after its last byte, want about 300ms", el)
	}
}

// TestSetBackendsKeepsSessions: replacing the pool sends new connections
// to the new set and leaves established sessions alone.
func TestSetBackendsKeepsSessions(t *testing.T) {
	a, b := listenLoopback(t), listenLoopback(t)
	echoServer(t, a)
	echoServer(t, b)
	l := startLB(t, Config{Backends: []string{a.Addr().String()}})
	old, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	roundTrip(t, old)
	l.SetBackends([]string{b.Addr().String()})
	roundTrip(t, old) // still alive, still on a
	for range 3 {
		c, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c)
		c.Close()
	}
	st := l.Backends()
	if len(st) != 2 || st[0].Addr != b.Addr().String() || st[0].Total != 3 || st[1].InService || st[1].Active != 1 {
		t.Errorf("after SetBackends: %+v", st)
	}
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	msg := make([]byte, 16)
	rand.Read(msg)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("round trip: %v", err)
	}
}

func TestDrain(t *testing.T) {
	for _, tt := range []struct {
		name   string
		drain  time.Duration
		closed bool
	}{
		{"off keeps sessions", 0, false},
		{"200ms closes sessions", 200 * time.Millisecond, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln := listenLoopback(t)
			echoServer(t, ln)
			l := startLB(t, Config{Backends: []string{ln.Addr().String()}, Drain: tt.drain})
			c, err := net.Dial("tcp", l.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			roundTrip(t, c)
			start := time.Now()
			l.SetHealth(ln.Addr().String(), HealthDown)
			c.SetReadDeadline(time.Now().Add(600 * time.Millisecond))
			_, err = c.Read(make([]byte, 1))
			if tt.closed {
				if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("session not drained: %v", err)
				}
				if el := time.Since(start); el < 190*time.Millisecond {
					t.Errorf("drained after %v, before the drain period", el)
				}
			} else if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("session closed with drain off: %v", err)
			}
		})
	}
	// Coming back up before the period ends cancels the drain.
	ln := listenLoopback(t)
	echoServer(t, ln)
	l := startLB(t, Config{Backends: []string{ln.Addr().String()}, Drain: 100 * time.Millisecond})
	c, _ := net.Dial("tcp", l.addr())
	defer c.Close()
	roundTrip(t, c)
	l.SetHealth(ln.Addr().String(), HealthDown)
	l.SetHealth(ln.Addr().String(), HealthUp)
	time.Sleep(200 * time.Millisecond)
	roundTrip(t, c)
}

func TestGracefulShutdown(t *testing.T) {
	ln := listenLoopback(t)
	echoServer(t, ln)
	l, err := New(Config{Frontends: []string{"127.0.0.1:0"}, Backends: []string{ln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	addr := l.addr()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- l.Serve(ctx) }()
	c, _ := net.Dial("tcp", addr)
	roundTrip(t, c)
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still accepting after Serve returned")
	}
	// The open session keeps working while Shutdown waits for it.
	shut := make(chan error, 1)
	go func() {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		shut <- l.Shutdown(sctx)
	}()
	time.Sleep(50 * time.Millisecond)
	roundTrip(t, c)
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(c)
	c.Close()
	if err := <-shut; err != nil {
		t.Fatalf("shutdown with sessions that ended: %v", err)
	}

	// A session that does not end is closed at the deadline.
	l2 := startLB(t, Config{Backends: []string{ln.Addr().String()}})
	c2, _ := net.Dial("tcp", l2.addr())
	defer c2.Close()
	roundTrip(t, c2)
	sctx, cc := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cc()
	if err := l2.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown: %v, want deadline exceeded", err)
	}
	c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("session survived the shutdown deadline: %v", err)
	}
}

func TestListenFailureUndoes(t *testing.T) {
	busy := listenLoopback(t)
	defer busy.Close()
	free := listenLoopback(t)
	freeAddr := free.Addr().String()
	free.Close()
	l, err := New(Config{Frontends: []string{freeAddr, busy.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(t.Context()); err == nil {
		t.Fatal("listen on a busy port succeeded")
	}
	ln, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("first frontend not released after the second failed: %v", err)
	}
	ln.Close()
}

func TestFreeBind(t *testing.T) {
	// 10.77.4.250 is on no interface of this host: only IP_FREEBIND lets
	// the frontend bind before the VIP arrives.
	if _, err := New(Config{Frontends: []string{"10.77.4.250:0"}}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind"); strings.TrimSpace(string(b)) == "0" {
		l, _ := New(Config{Frontends: []string{"10.77.4.250:0"}})
		if err := l.Listen(t.Context()); err == nil {
			t.Fatal("bind to a non-local address without freebind succeeded")
		}
	}
	l, _ := New(Config{Frontends: []string{"10.77.4.250:0"}, FreeBind: true})
	if err := l.Listen(t.Context()); err != nil {
		t.Fatalf("freebind listen: %v", err)
	}
	l.Shutdown(t.Context())
}

// TestKeepAliveInherited checks what the listener relies on: sockets
// accepted the way the event loops do inherit keep-alive, its timers and
// TCP_NODELAY from the listening socket.
func TestKeepAliveInherited(t *testing.T) {
	l, err := New(Config{Frontends: []string{"127.0.0.1:0"}, KeepAlive: 17 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	ln := l.listeners[0]
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// accept4 on the listener itself, as the loops do (the connection is
	// queued once Dial returned): the net package's Accept would set
	// TCP_NODELAY on its own.
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	cfd := -1
	var aerr unix.Errno
	if err := rc.Control(func(fd uintptr) {
		r, _, e := unix.Syscall6(unix.SYS_ACCEPT4, fd, 0, 0, unix.SOCK_CLOEXEC, 0, 0)
		cfd, aerr = int(r), e
	}); err != nil || aerr != 0 {
		t.Fatal(err, aerr)
	}
	defer unix.Close(cfd)
	on, _ := unix.GetsockoptInt(cfd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
	idle, _ := unix.GetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
	nodelay, _ := unix.GetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
	if on != 1 || idle != 17 || nodelay != 1 {
		t.Errorf("accepted socket: SO_KEEPALIVE %d, TCP_KEEPIDLE %d, TCP_NODELAY %d; want 1, 17, 1", on, idle, nodelay)
	}
}
