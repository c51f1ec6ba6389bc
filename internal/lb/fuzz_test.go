package lb

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzProxyBytes sends arbitrary bytes through the proxy to an echo
// backend and half-closes: whatever the bytes, they come back unchanged,
// followed by the backend's answer to the half-close. The frontend never
// interprets what it carries.
func FuzzProxyBytes(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01})
	f.Add(bytes.Repeat([]byte{0xff}, 70000)) // crosses the buffer size
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	echoServer(f, ln)
	l, err := New(Config{Frontends: []string{"127.0.0.1:0"}, Backends: []string{ln.Addr().String()}})
	if err != nil {
		f.Fatal(err)
	}
	if err := l.Listen(f.Context()); err != nil {
		f.Fatal(err)
	}
	go l.Serve(f.Context())
	addr := l.addr()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if want := append(bytes.Clone(data), "bye"...); !bytes.Equal(got, want) {
			t.Fatalf("sent %d bytes, got %d back (want %d)", len(data), len(got), len(want))
		}
	})
}
