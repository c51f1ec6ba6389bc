package lb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sock is one end of a session: a non-blocking TCP socket in the runtime
// poller, held as an *os.File. The load balancer makes them itself, with
// accept4 and connect on raw descriptors, because the net package spends
// system calls a proxy has no use for on each connection (getsockname and
// getpeername for addresses, TCP_NODELAY again on accepted sockets, which
// inherit it from the listener) plus a context, a goroutine and a timer
// per dial. os.NewFile registers a non-blocking descriptor with the poller
// without duplicating it, which net.FileConn would.
type sock struct {
	f  *os.File
	rc syscall.RawConn
}

func newSock(fd int) (*sock, error) {
	f := os.NewFile(uintptr(fd), "")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &sock{f: f, rc: rc}, nil
}

func (s *sock) Close() error { return s.f.Close() }

func (s *sock) Write(b []byte) (int, error) { return s.f.Write(b) }

func (s *sock) SetReadDeadline(t time.Time) error { return s.f.SetReadDeadline(t) }

// CloseWrite sends a FIN: shutdown(SHUT_WR).
func (s *sock) CloseWrite() error {
	var serr error
	if err := s.rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return err
	}
	return serr
}

// RemoteAddr is the peer's address, looked up when asked (only logs do).
func (s *sock) RemoteAddr() string {
	var sa unix.Sockaddr
	_ = s.rc.Control(func(fd uintptr) { sa, _ = unix.Getpeername(int(fd)) })
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	}
	return "?"
}

// acceptOne accepts one connection from a listener's raw descriptor,
// waiting in the poller while none is queued.
func acceptOne(rc syscall.RawConn) (*sock, error) {
	var nfd int
	var aerr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			// Accept4 converts the peer address; the raw call does not.
			r, _, e := unix.Syscall6(unix.SYS_ACCEPT4, fd, 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
			switch e {
			case 0:
				nfd, aerr = int(r), nil
				return true
			case unix.EINTR, unix.ECONNABORTED:
				// A connection reset while queued: take the next.
				continue
			case unix.EAGAIN:
				return false
			}
			aerr = os.NewSyscallError("accept4", e)
			return true
		}
	})
	if err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, aerr
	}
	return newSock(nfd)
}

// target is a backend address resolved once, for raw dials.
type target struct {
	ap netip.AddrPort // invalid: not an IP literal, dial through net.Dialer
}

func parseTarget(addr string) target {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return target{}
	}
	return target{ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
}

var errConnectTimeout = errors.New("connect timed out")

// dial connects to b within tun's connect timeout: socket, options,
// non-blocking connect, then a wait in the poller for writability bounded
// by a deadline, and getpeername to tell a connect done from one still
// going (SO_ERROR only when it is not done).
func dial(b *Backend, tun *tunables, keepAlive time.Duration) (*sock, error) {
	ap := b.target.ap
	if !ap.IsValid() {
		return dialNet(b.addr, tun)
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ap.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = unix.AF_INET6
		s6 := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
		if z := ap.Addr().Zone(); z != "" {
			if ifi, err := net.InterfaceByName(z); err == nil {
				s6.ZoneId = uint32(ifi.Index)
			}
		}
		sa = s6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setsockopt", err)
	}
	if err := setKeepAlive(fd, keepAlive); err != nil {
		unix.Close(fd)
		return nil, err
	}
	s, err := newSock(fd)
	if err != nil {
		return nil, err
	}
	if tun.dialer.Timeout > 0 {
		_ = s.f.SetWriteDeadline(time.Now().Add(tun.dialer.Timeout))
	}
	// connect runs inside the poller's write wait, so that the writable
	// edge that ends it cannot come before the wait is armed.
	var cerr error
	first := true
	werr := s.rc.Write(func(fd uintptr) bool {
		if first {
			first = false
			for {
				err := unix.Connect(int(fd), sa)
				switch err {
				case unix.EINTR:
					continue
				case unix.EINPROGRESS, unix.EALREADY:
					return false // wait for writability
				case nil:
					return true
				}
				cerr = os.NewSyscallError("connect", err)
				return true
			}
		}
		if _, err := unix.Getpeername(int(fd)); err == nil {
			return true
		}
		n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = os.NewSyscallError("getsockopt", err)
		case n == 0, unix.Errno(n) == unix.EINPROGRESS, unix.Errno(n) == unix.EALREADY, unix.Errno(n) == unix.EINTR:
			return false // woken early: still connecting
		default:
			cerr = os.NewSyscallError("connect", unix.Errno(n))
		}
		return true
	})
	if werr == nil && cerr == nil {
		if tun.dialer.Timeout > 0 {
			_ = s.f.SetWriteDeadline(time.Time{})
		}
		return s, nil
	}
	s.Close()
	if cerr != nil {
		return nil, cerr
	}
	if errors.Is(werr, os.ErrDeadlineExceeded) {
		return nil, fmt.Errorf("%w after %v", errConnectTimeout, tun.dialer.Timeout)
	}
	return nil, werr
}

// dialNet dials a backend given by name through the net package and takes
// its descriptor over.
func dialNet(addr string, tun *tunables) (*sock, error) {
	c, err := tun.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	f, err := c.(*net.TCPConn).File() // a duplicate, still non-blocking
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &sock{f: f, rc: rc}, nil
}

// setKeepAlive turns TCP keep-alive on with period ka (idle time and probe
// interval; 9 probes, as Go's default), or leaves it off when ka <= 0.
func setKeepAlive(fd int, ka time.Duration) error {
	if ka <= 0 {
		return nil
	}
	secs := max(int(ka/time.Second), 1)
	for _, o := range [...][3]int{{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1}, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs}, {unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9}} {
		if err := unix.SetsockoptInt(fd, o[0], o[1], o[2]); err != nil {
			return fmt.Errorf("lb: set keep-alive: %w", err)
		}
	}
	return nil
}

// A splice pipe, pooled; the cleanup closes pipes the pool drops.
type splicePipe struct {
	r, w    int
	cleanup runtime.Cleanup
}

const pipeSize = 1 << 20

var pipePool = sync.Pool{New: func() any {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	// A larger pipe moves more per pair of splices; the default (64 KiB)
	// is kept where the limit refuses.
	_, _ = unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, pipeSize)
	sp := &splicePipe{r: p[0], w: p[1]}
	sp.cleanup = runtime.AddCleanup(sp, func(p [2]int) { unix.Close(p[0]); unix.Close(p[1]) }, p)
	return sp
}}

// splice moves n bytes (already queued on src, so the first read does not
// wait) from src to dst in the kernel through a pooled pipe, and counts
// them as they reach dst. It stops early at src's EOF.
func splice(dst, src *sock, n int, count func(int)) error {
	p, _ := pipePool.Get().(*splicePipe)
	if p == nil {
		return errors.New("lb: no pipe for splice")
	}
	inPipe := 0
	defer func() {
		if inPipe == 0 {
			pipePool.Put(p)
		} else {
			// Bytes left in it belong to a broken session: drop the pipe.
			p.cleanup.Stop()
			unix.Close(p.r)
			unix.Close(p.w)
		}
	}()
	const flags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
	for n > 0 {
		var m int64
		var serr error
		err := src.rc.Read(func(fd uintptr) bool {
			m, serr = unix.Splice(int(fd), nil, p.w, nil, min(n, pipeSize), flags)
			return serr != unix.EAGAIN && serr != unix.EINTR
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return os.NewSyscallError("splice", serr)
		}
		if m == 0 {
			return nil // EOF: the caller's next read sees it
		}
		inPipe += int(m)
		n -= int(m)
		for inPipe > 0 {
			var w int64
			err := dst.rc.Write(func(fd uintptr) bool {
				w, serr = unix.Splice(p.r, nil, int(fd), nil, inPipe, flags)
				return serr != unix.EAGAIN && serr != unix.EINTR
			})
			if err != nil {
				return err
			}
			if serr != nil {
				return os.NewSyscallError("splice", serr)
			}
			inPipe -= int(w)
			count(int(w))
		}
	}
	return nil
}
