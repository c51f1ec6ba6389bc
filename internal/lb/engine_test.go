package lb

import (
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// goroutineEngine makes startLB run sessions on goroutines instead of the
// event loops (the default). Tests run one at a time in this package, so
// a plain variable set around subtests is enough.
var goroutineEngine bool

// TestGoroutineEngine runs the session tests again with every session on
// goroutines: the path taken with HAPLANE_LB_LOOP=0, and for backends
// given by name.
func TestGoroutineEngine(t *testing.T) {
	goroutineEngine = true
	t.Cleanup(func() { goroutineEngine = false })
	for _, tt := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"ProxyTLSAndSpread", TestProxyTLSAndSpread},
		{"BackendKilledUnderLoad", TestBackendKilledUnderLoad},
		{"PassiveRetry", TestPassiveRetry},
		{"HalfClose", TestHalfClose},
		{"IdleTimeout", TestIdleTimeout},
		{"Drain", TestDrain},
		{"GracefulShutdown", TestGracefulShutdown},
		{"HandshakeReplay", TestHandshakeReplay},
		{"HandshakeNoReplayForPlainBytes", TestHandshakeNoReplayForPlainBytes},
		{"HandshakeQuietClient", TestHandshakeQuietClient},
		{"GarbageDoesNotDisturbOthers", TestGarbageDoesNotDisturbOthers},
		{"BackendByName", TestBackendByName},
	} {
		t.Run(tt.name, tt.fn)
	}
}

// TestLoopEngineOwnsSessions checks that, by default, the event loops
// accept and hold the sessions (no goroutine path in between): the
// frontend is a loop listener and an open session sits in a loop's table.
func TestLoopEngineOwnsSessions(t *testing.T) {
	if !useLoops {
		t.Skip("HAPLANE_LB_LOOP=0: the event loops are off")
	}
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
	for _, lp := range startLoops() {
		lp.mu.Lock()
		for _, ls := range lp.conns {
			if ls.l == l && ls.s.client == nil {
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

// TestBackendByName: a backend given by host name, not an IP literal, is
// dialed through the resolver; with the event loops on, its sessions are
// handed to the goroutine path and still work both ways.
func TestBackendByName(t *testing.T) {
	echo := listenLoopback(t)
	echoServer(t, echo)
	port := echo.Addr().(*net.TCPAddr).Port
	l := startLB(t, Config{Backends: []string{net.JoinHostPort("localhost", strconv.Itoa(port))}})
	for range 3 {
		c, err := net.Dial("tcp", l.addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "by name")
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "by namebye" { // echoServer says bye after the client's EOF
			t.Fatalf("through a backend by name: %q %v", got, err)
		}
	}
	if st := l.Backends(); st[0].Total != 3 || st[0].BytesIn != 21 || st[0].BytesOut != 30 {
		t.Errorf("backend by name: %+v; want 3 sessions, 21 bytes in and 30 out", st[0])
	}
}
