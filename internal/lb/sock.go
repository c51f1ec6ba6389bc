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
	"unsafe"

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
	f       *os.File
	rc      syscall.RawConn
	writeFn func(fd uintptr) bool // s.write, bound once
	// Write's state, for writeFn; one goroutine writes to a sock.
	wb   []byte
	wn   int
	werr error
}

func newSock(fd int) (*sock, error) {
	return fileSock(os.NewFile(uintptr(fd), ""))
}

// fileSock makes a sock of f, which it closes on failure.
func fileSock(f *os.File) (*sock, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &sock{f: f, rc: rc}
	s.writeFn = s.write
	return s, nil
}

func (s *sock) Close() error { return s.f.Close() }

// Write sends all of b, waiting in the poller while the socket is full.
func (s *sock) Write(b []byte) (int, error) {
	s.wb, s.wn, s.werr = b, 0, nil
	err := s.rc.Write(s.writeFn)
	n := s.wn
	if err == nil {
		err = s.werr
	}
	s.wb, s.werr = nil, nil
	return n, err
}

func (s *sock) write(fd uintptr) bool {
	for s.wn < len(s.wb) {
		m, e := rawSend(fd, s.wb[s.wn:], 0)
		switch e {
		case 0:
			s.wn += m
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.werr = os.NewSyscallError("write", e)
		return true
	}
	return true
}

func (s *sock) SetReadDeadline(t time.Time) error { return s.f.SetReadDeadline(t) }

// CloseWrite sends a FIN: shutdown(SHUT_WR). A failure means the socket
// is gone already, which the other direction finds out by itself.
func (s *sock) CloseWrite() error { return s.rc.Control(shutdownWrite) }

func shutdownWrite(fd uintptr) { unix.RawSyscall(unix.SYS_SHUTDOWN, fd, unix.SHUT_WR, 0) }

// RemoteAddr is the peer's address, looked up when asked (only logs do).
func (s *sock) RemoteAddr() string {
	addr := "?"
	_ = s.rc.Control(func(fd uintptr) { addr = peerString(int(fd)) })
	return addr
}

// acceptor accepts connections on a listener's raw descriptor. Its poller
// callback is bound once; one goroutine uses an acceptor.
type acceptor struct {
	rc   syscall.RawConn
	fn   func(fd uintptr) bool // a.accept
	nfd  int
	aerr error
}

func newAcceptor(rc syscall.RawConn) *acceptor {
	a := &acceptor{rc: rc}
	a.fn = a.accept
	return a
}

func (a *acceptor) accept(fd uintptr) bool {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, fd, 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
			a.nfd, a.aerr = int(r), nil
			return true
		case unix.EINTR, unix.ECONNABORTED:
			// A connection reset while queued: take the next.
			continue
		case unix.EAGAIN:
			return false
		}
		a.aerr = os.NewSyscallError("accept4", e)
		return true
	}
}

// acceptOne accepts one connection, waiting in the poller while none is
// queued.
func (a *acceptor) acceptOne() (*sock, error) {
	if err := a.rc.Read(a.fn); err != nil {
		return nil, err
	}
	if a.aerr != nil {
		return nil, a.aerr
	}
	return newSock(a.nfd)
}

// rawRead, rawSend and connected are system calls the load balancer
// makes on non-blocking sockets, which never block: they are made raw,
// without telling the scheduler, so that one taking long in the kernel's
// packet path does not get its P handed to another thread by sysmon.
func rawRead(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func rawSend(fd uintptr, b []byte, flags int) (int, unix.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unix.MSG_NOSIGNAL|flags), 0, 0)
	return int(r), e
}

func rawSetsockopt(fd, level, opt, v int) error {
	v32 := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v32)), 4, 0)
	if e != 0 {
		return e
	}
	return nil
}

// The loop's other system calls, raw for the same reason. Under load a
// loop spends most of its time in the kernel; a P found in a system call
// when sysmon preempts the loop's long-running goroutine (every 10ms) is
// handed off, which keeps sysmon polling every 20µs and costs the loop a
// P reacquisition. None of these block: the sockets and pipes are
// non-blocking, and close without SO_LINGER returns at once.
func rawClose(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func rawShutdown(fd, how int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	if e != 0 {
		return e
	}
	return nil
}

func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func rawSocket(family, typ, proto int) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), uintptr(typ), uintptr(proto))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// rawSplice splices n bytes from rfd to wfd at their current offsets.
func rawSplice(rfd, wfd, n, flags int) (int64, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(rfd), 0, uintptr(wfd), 0, uintptr(n), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int64(r), nil
}

// putPort stores port in network byte order, as sockaddr holds it.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// connected tells whether fd has a peer (getpeername succeeds).
func connected(fd uintptr) bool {
	var sa unix.RawSockaddrAny
	l := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETPEERNAME, fd, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)))
	return e == 0
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

// dialState is a dial's sockaddr and the state of its poller callback,
// pooled so that a dial allocates only its socket.
type dialState struct {
	sa    unix.RawSockaddrAny
	salen uintptr
	first bool
	cerr  error
	fn    func(fd uintptr) bool // d.connect
}

var dialStates = sync.Pool{New: func() any { d := &dialState{}; d.fn = d.connect; return d }}

// set fills the sockaddr for ap and returns its address family.
func (d *dialState) set(ap netip.AddrPort) int {
	d.sa = unix.RawSockaddrAny{}
	d.first, d.cerr = true, nil
	port := ap.Port()
	if ap.Addr().Is4() {
		d.salen = unix.SizeofSockaddrInet4
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&d.sa))
		sa4.Family = unix.AF_INET
		putPort(&sa4.Port, port)
		sa4.Addr = ap.Addr().As4()
		return unix.AF_INET
	}
	d.salen = unix.SizeofSockaddrInet6
	sa6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(&d.sa))
	sa6.Family = unix.AF_INET6
	putPort(&sa6.Port, port)
	sa6.Addr = ap.Addr().As16()
	if z := ap.Addr().Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			sa6.Scope_id = uint32(ifi.Index)
		}
	}
	return unix.AF_INET6
}

// connect is the callback of the poller's write wait: the first call
// connects (inside the wait, so the writable edge that ends the connect
// cannot come before the wait is armed), later ones check whether the
// connect is done: getpeername succeeds once connected, and SO_ERROR
// tells a failure from a wake-up while still connecting.
func (d *dialState) connect(fd uintptr) bool {
	if d.first {
		d.first = false
		for {
			_, _, e := unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&d.sa)), d.salen)
			switch e {
			case unix.EINTR:
				continue
			case unix.EINPROGRESS, unix.EALREADY:
				return false // wait for writability
			case 0:
				return true
			}
			d.cerr = os.NewSyscallError("connect", e)
			return true
		}
	}
	if connected(fd) {
		return true
	}
	n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		d.cerr = os.NewSyscallError("getsockopt", err)
	case n == 0, unix.Errno(n) == unix.EINPROGRESS, unix.Errno(n) == unix.EALREADY, unix.Errno(n) == unix.EINTR:
		return false // woken early: still connecting
	default:
		d.cerr = os.NewSyscallError("connect", unix.Errno(n))
	}
	return true
}

// dial connects to b within tun's connect timeout: socket, options, a
// non-blocking connect and a wait in the poller for writability, bounded
// by a deadline.
func dial(b *Backend, tun *tunables, keepAlive time.Duration) (*sock, error) {
	ap := b.target.ap
	if !ap.IsValid() {
		return dialNet(b.addr, tun)
	}
	d := dialStates.Get().(*dialState)
	defer dialStates.Put(d)
	family := d.set(ap)
	fd, err := rawSocket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := rawSetsockopt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		rawClose(fd)
		return nil, os.NewSyscallError("setsockopt", err)
	}
	if err := setKeepAlive(fd, keepAlive); err != nil {
		rawClose(fd)
		return nil, err
	}
	s, err := newSock(fd)
	if err != nil {
		return nil, err
	}
	timeout := tun.dialer.Timeout
	if timeout > 0 {
		_ = s.f.SetWriteDeadline(time.Now().Add(timeout))
	}
	werr := s.rc.Write(d.fn)
	if werr == nil && d.cerr == nil {
		if timeout > 0 {
			_ = s.f.SetWriteDeadline(time.Time{})
		}
		return s, nil
	}
	s.Close()
	if d.cerr != nil {
		return nil, d.cerr
	}
	if errors.Is(werr, os.ErrDeadlineExceeded) {
		return nil, fmt.Errorf("%w after %v", errConnectTimeout, timeout)
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
	return fileSock(f)
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
		if err := rawSetsockopt(fd, o[0], o[1], o[2]); err != nil {
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
	sp.cleanup = runtime.AddCleanup(sp, func(p [2]int) { rawClose(p[0]); rawClose(p[1]) }, p)
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
			rawClose(p.r)
			rawClose(p.w)
		}
	}()
	const flags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
	for n > 0 {
		var m int64
		var serr error
		err := src.rc.Read(func(fd uintptr) bool {
			m, serr = rawSplice(int(fd), p.w, min(n, pipeSize), flags)
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
				w, serr = rawSplice(p.r, int(fd), inPipe, flags)
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
