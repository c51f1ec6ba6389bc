package lb

import (
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestGarbageDoesNotDisturbOthers floods the frontend with random bytes,
// half-open connections, clients that vanish without a FIN (SO_LINGER 0
// resets) and connections that just close, while well-behaved TLS clients
// run: every well-behaved request succeeds.
func TestGarbageDoesNotDisturbOthers(t *testing.T) {
	pki := newTestPKI(t)
	var addrs []string
	for i := range 3 {
		addrs = append(addrs, startTLSBackend(t, pki, listenLoopback(t), fmt.Sprint("b", i)).addr())
	}
	l := startLB(t, Config{Backends: addrs})
	stop := make(chan struct{})
	var abuse atomic.Int64
	var wg sync.WaitGroup
	var held []net.Conn
	var heldMu sync.Mutex // protects held
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial("tcp", l.addr())
				if err != nil {
					continue
				}
				tc := c.(*net.TCPConn)
				abuse.Add(1)
				switch (w + i) % 5 {
				case 0: // random bytes, then a reset
					junk := make([]byte, 1+mrand.IntN(8192))
					rand.Read(junk)
					tc.Write(junk)
					tc.SetLinger(0)
					tc.Close()
				case 1: // immediate reset
					tc.SetLinger(0)
					tc.Close()
				case 2: // half-open: a partial TLS record, then our FIN, held open
					tc.Write([]byte{0x16, 0x03, 0x01, 0x02})
					tc.CloseWrite()
					heldMu.Lock()
					held = append(held, tc)
					heldMu.Unlock()
				case 3: // silent, held open
					heldMu.Lock()
					held = append(held, tc)
					heldMu.Unlock()
				case 4: // random bytes and a normal close
					junk := make([]byte, 1+mrand.IntN(512))
					rand.Read(junk)
					tc.Write(junk)
					tc.Close()
				}
			}
		}()
	}
	var good, bad atomic.Int64
	var gwg sync.WaitGroup
	for range 4 {
		gwg.Add(1)
		go func() {
			defer gwg.Done()
			c := newClient(pki, l.addr())
			for range 40 {
				if _, err := c.get(); err != nil {
					bad.Add(1)
					t.Errorf("good client failed amid garbage: %v", err)
				} else {
					good.Add(1)
				}
			}
		}()
	}
	gwg.Wait()
	close(stop)
	wg.Wait()
	t.Logf("%d good requests, %d failed, amid %d abusive connections", good.Load(), bad.Load(), abuse.Load())
	if good.Load() != 160 {
		t.Errorf("good requests %d, want 160", good.Load())
	}
	heldMu.Lock()
	for _, c := range held {
		c.Close()
	}
	heldMu.Unlock()
	// Everything the abusers opened ends once they are gone: no session leaks.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var active int64
		for _, s := range l.Backends() {
			active += s.Active
		}
		if active == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still open after every client left", active)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
