package lb

import (
	"io"
	"net"
	"testing"
)

// BenchmarkNewConnection is one short request per new connection through
// the proxy on loopback (client, proxy and a backend that answers and
// closes all in this process): a profile of it shows the proxy's cost per
// connection, e.g. go test -run x -bench NewConnection -benchmem
// -memprofile /tmp/mem.prof ./internal/lb.
func BenchmarkNewConnection(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 512)
				c.Read(buf)
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"))
				c.Close()
			}()
		}
	}()
	l := startLB(b, Config{Backends: []string{ln.Addr().String()}})
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := net.Dial("tcp", l.addr())
			if err != nil {
				b.Fatal(err)
			}
			c.Write(req)
			if _, err := io.ReadAll(c); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}

// BenchmarkBulk streams 64 MiB per operation from a backend to the client
// through the proxy on loopback (MB/s is the proxy's bulk throughput, as
// far as one process holding all three ends shows it).
func BenchmarkBulk(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	const size = 64 << 20
	chunk := make([]byte, 256<<10)
	serveConns(ln, func(c net.Conn) {
		buf := make([]byte, 16)
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			return
		}
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	l := startLB(b, Config{Backends: []string{ln.Addr().String()}})
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", l.addr())
		if err != nil {
			b.Fatal(err)
		}
		c.Write([]byte("x"))
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != size {
			b.Fatalf("got %d bytes, %v", n, err)
		}
		c.Close()
	}
}
