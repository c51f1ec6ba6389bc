package lb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawRead and rawSend are system calls the load balancer
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

func rawWrite(fd int, b []byte) error {
	_, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
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

var errConnectTimeout = errors.New("connect timed out")

// dialState is a dial's sockaddr, pooled so that a dial allocates only
// its socket.
type dialState struct {
	sa    unix.RawSockaddrAny
	salen uintptr
}

var dialStates = sync.Pool{New: func() any { return &dialState{} }}

// set fills the sockaddr for ap and returns its address family.
func (d *dialState) set(ap netip.AddrPort) int {
	d.sa = unix.RawSockaddrAny{}
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
