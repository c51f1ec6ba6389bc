package lb

import (
	"container/heap"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The start of a session in an event loop: the accept, the backend
// connect with its timeout and retries, and the replay of a ClientHello.

// loopListener is a frontend's listening socket as the loops accept on
// it: a duplicate of the listener's descriptor, out of the runtime poller
// (the net.Listener is closed once duplicated), in every loop's set.
type loopListener struct {
	l  *LB
	ln net.Listener
	// mu protects fd and regs: close (from Shutdown) must not close the
	// number while a loop accepts on it.
	mu   sync.Mutex
	fd   int
	regs []*loopReg
}

// loopReg is a listener in one loop's set.
type loopReg struct {
	ll      *loopListener
	lp      *evloop
	id      uint32
	backoff time.Duration // after a failed accept (out of descriptors); loop goroutine only
}

func (r *loopReg) event() unix.EpollEvent {
	// Level-triggered, so accepts cut short by acceptBurst go on next
	// round; exclusive, so a connection wakes one loop, not all.
	return unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(r.id), Pad: sideListener}
}

func newLoopListener(l *LB, ln net.Listener, lps []*evloop) (*loopListener, error) {
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	// The duplicate shares the socket (and its O_NONBLOCK); closing the
	// original takes the socket out of the runtime poller, which would
	// otherwise wake for every connection with nobody waiting.
	ln.Close()
	ll := &loopListener{l: l, ln: ln, fd: nfd}
	ll.mu.Lock()
	defer ll.mu.Unlock()
	for _, lp := range lps {
		r := &loopReg{ll: ll, lp: lp}
		lp.mu.Lock()
		r.id = freeID(&lp.nextID, lp.lsns)
		lp.lsns[r.id] = r
		lp.mu.Unlock()
		ll.regs = append(ll.regs, r)
		ev := r.event()
		if err := rawEpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, nfd, &ev); err != nil {
			ll.closeLocked()
			return nil, os.NewSyscallError("epoll_ctl", err)
		}
	}
	return ll, nil
}

// close stops every loop accepting on ll and closes its socket; the
// kernel resets connections still in its queue.
func (ll *loopListener) close() {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	ll.closeLocked()
}

func (ll *loopListener) closeLocked() {
	if ll.fd < 0 {
		return
	}
	for _, r := range ll.regs {
		// The set would keep the socket while any duplicate is open.
		_ = rawEpollCtl(r.lp.epfd, unix.EPOLL_CTL_DEL, ll.fd, nil)
		r.lp.mu.Lock()
		delete(r.lp.lsns, r.id)
		r.lp.mu.Unlock()
	}
	rawClose(ll.fd)
	ll.fd = -1
}

// accept takes the connections queued on r's listener and starts their
// sessions in this loop, or hands them to a loop with fewer (overShare).
func (lp *evloop) accept(r *loopReg) {
	ll := r.ll
	for range acceptBurst {
		ll.mu.Lock()
		if ll.fd < 0 {
			ll.mu.Unlock()
			return
		}
		fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(ll.fd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		if e == 0 {
			// Counted before closeListeners can return (it takes
			// ll.mu), so Shutdown's wait includes this session.
			ll.l.sessions.Add(1)
		}
		ll.mu.Unlock()
		switch e {
		case 0:
			r.backoff = 0
			if to := lp.overShare(); to != nil {
				to.hand(ll.l, int(fd))
			} else {
				lp.start(ll.l, int(fd))
			}
			continue
		case unix.EINTR, unix.ECONNABORTED:
			// A connection reset while queued: take the next.
			continue
		case unix.EAGAIN:
			return
		}
		// Out of descriptors or a similar passing condition: this loop
		// stops listening a little rather than spin on a level-triggered
		// event it cannot serve, and does not give up the frontend.
		r.backoff = min(max(2*r.backoff, 5*time.Millisecond), time.Second)
		ll.l.cfg.Logger.Warn("lb: accept", "frontend", ll.ln.Addr(), "err", os.NewSyscallError("accept4", e), "retry_in", r.backoff)
		ll.mu.Lock()
		if ll.fd >= 0 {
			_ = rawEpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, ll.fd, nil)
		}
		ll.mu.Unlock()
		lp.armListener(r, r.backoff)
		return
	}
}

// Every loop listens on every frontend, and which one the kernel wakes
// for a connection is up to timing: left alone, one loop can take nearly
// all of a burst (63 of 64 connections was seen), and long-lived
// sessions (watches) then keep one core busy while the others idle. So a
// loop holding more than shareSlack sessions above the least loaded one
// hands the connections it accepts to that loop (its inbox) until the
// shares are even again. An earlier rule, in which such a loop stopped
// accepting for 2 ms, balanced as well but cost a fifth of the
// connections per second on short sessions: the loops took turns idling
// (docs/BENCHMARKS.md). A hand-over costs one eventfd write and happens
// only past the slack, so rarely once the shares are even.

// shareSlack is how many sessions more than the least loaded loop's
// (least) a loop may hold and still keep what it accepts: a few, and an
// eighth more with many, so that short sessions are seldom handed over.
func shareSlack(least int) int { return 4 + least/8 }

// share is a loop's sessions, counting those handed to it not yet taken.
func (lp *evloop) share() int { return int(lp.load.Load() + lp.pending.Load()) }

// overShare returns the least loaded other loop when lp holds more than
// its share of sessions, nil otherwise.
func (lp *evloop) overShare() *evloop {
	var to *evloop
	least := 0
	for _, o := range loops {
		if o != lp {
			if k := o.share(); to == nil || k < least {
				to, least = o, k
			}
		}
	}
	if to == nil || lp.share() <= least+shareSlack(least) {
		return nil
	}
	return to
}

// hand puts an accepted client socket of l in lp's inbox and wakes lp
// when the inbox was empty (a wake-up already sent takes the rest too).
func (lp *evloop) hand(l *LB, fd int) {
	lp.pending.Add(1)
	lp.inMu.Lock()
	first := len(lp.in) == 0
	lp.in = append(lp.in, handed{l: l, fd: fd})
	lp.inMu.Unlock()
	if first {
		// Cannot fail but by overflowing the counter, which the
		// loop's read resets long before.
		_ = rawWrite(lp.wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// takeInbox starts the sessions handed to lp. Loop goroutine only.
func (lp *evloop) takeInbox() {
	var b [8]byte
	_, _ = rawRead(uintptr(lp.wakefd), b[:])
	lp.inMu.Lock()
	in := lp.in
	lp.in = lp.spare // the two slices take turns, so hand-overs allocate nothing
	lp.inMu.Unlock()
	for _, h := range in {
		lp.start(h.l, h.fd)
		lp.pending.Add(-1)
	}
	clear(in)
	lp.spare = in[:0]
}

// resume puts a listener back in the loop's set after a backoff.
func (lp *evloop) resume(r *loopReg) {
	ll := r.ll
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if ll.fd < 0 {
		return
	}
	ev := r.event()
	if err := rawEpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, ll.fd, &ev); err != nil && err != unix.EEXIST {
		lp.armListener(r, time.Second)
	}
}

// start begins the session of an accepted client socket (counted in
// l.sessions by accept already): it joins the
// loop's set at once (a reset before the backend is there ends it), and
// the first backend connect starts.
func (lp *evloop) start(l *LB, cfd int) {
	l.accepts.Add(1)
	tun := l.tun.Load()
	ls := &lsess{l: l, idle: tun.idle, fd: [2]int{cfd, -1}, state: stConnecting}
	if tun.handshake > 0 {
		ls.hs, ls.watch = tun.handshake, true
	}
	lp.register(ls)
	ev := unix.EpollEvent{Events: evFlags, Fd: int32(ls.id), Pad: sideClient}
	if err := rawEpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, cfd, &ev); err != nil {
		l.cfg.Logger.Warn("lb: accept", "err", os.NewSyscallError("epoll_ctl", err))
		lp.abort(ls)
		return
	}
	lp.dialNext(ls)
}

// dialNext connects ls to the next backend in policy order that it has
// not tried (or to the next address of ls.b, when set: a name with
// several); a connect that fails at once goes on to the next address,
// then makes the backend suspect and goes on to the next backend.
func (lp *evloop) dialNext(ls *lsess) {
	l := ls.l
	for {
		b := ls.b
		if b == nil {
			if b = l.pick(ls.tried); b == nil {
				l.noneOK.Add(1)
				l.cfg.Logger.Warn("lb: no backend accepted the connection", "client", peerString(ls.fd[0]), "tried", len(ls.tried))
				lp.abort(ls)
				return
			}
			if len(ls.tried) > 0 {
				l.retries.Add(1)
			}
			ls.b, ls.ai = b, 0
		}
		aps := *b.aps.Load()
		if len(aps) == 0 {
			lp.backendFailed(ls, fmt.Errorf("lb: %s does not resolve", b.name))
			continue
		}
		tun := l.tun.Load()
		fd, done, err := connectRaw(aps[(int(b.pref.Load())+ls.ai)%len(aps)], l.cfg.KeepAlive, tun.handshake > 0)
		if err != nil {
			lp.addrFailed(ls, err)
			continue
		}
		ls.mu.Lock()
		ls.fd[1] = fd
		ls.mu.Unlock()
		ls.bgen++
		ls.state = stConnecting
		ev := unix.EpollEvent{Events: evFlags, Fd: int32(ls.id), Pad: int32(sideBackend | (ls.bgen&genMask)<<genShift)}
		if err := rawEpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			l.cfg.Logger.Warn("lb: connect", "backend", b.addr, "err", os.NewSyscallError("epoll_ctl", err))
			lp.abort(ls)
			return
		}
		if done {
			lp.connected(ls)
			return
		}
		if t := tun.dialer.Timeout; t > 0 {
			lp.arm(ls, t)
		}
		return
	}
}

// addrFailed: the connect to ls.b's current address failed; the next
// address of the backend is tried, or when none is left the backend has
// failed. The caller dials next.
func (lp *evloop) addrFailed(ls *lsess, err error) {
	if ls.ai+1 < len(*ls.b.aps.Load()) {
		ls.ai++
		return
	}
	lp.backendFailed(ls, err)
}

// backendFailed makes ls.b suspect and leaves it for the next backend.
func (lp *evloop) backendFailed(ls *lsess, err error) {
	ls.l.connectFailed(ls.b, ls.l.tun.Load(), err)
	ls.tried = append(ls.tried, ls.b)
	ls.b = nil
}

// connectDone is called on the first event of a connecting backend
// socket. It reports whether the session is now connected (and open); on
// a failure the next backend is being connected to, or the session ended.
func (lp *evloop) connectDone(ls *lsess, evs uint32) bool {
	if evs&(unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		// Writable without an error: a non-blocking connect signals
		// its failure with EPOLLERR, so this one is established (no
		// getsockopt needed to tell).
		lp.connected(ls)
		return !ls.done && ls.state == stOpen
	}
	n, err := unix.GetsockoptInt(ls.fd[1], unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err == nil && n == 0:
		lp.connected(ls)
		return !ls.done && ls.state == stOpen
	case err == nil && (unix.Errno(n) == unix.EINPROGRESS || unix.Errno(n) == unix.EALREADY):
		return false // woken early: still connecting
	case err == nil:
		err = unix.Errno(n)
	}
	lp.connectFailed(ls, os.NewSyscallError("connect", err))
	return false
}

// connectFailed closes the backend socket of a connect that failed or
// timed out and goes on to the next address or backend.
func (lp *evloop) connectFailed(ls *lsess, err error) {
	lp.dropBackend(ls)
	lp.addrFailed(ls, err)
	lp.dialNext(ls)
}

// dropBackend closes ls's backend socket, which leaves the loop's set.
func (lp *evloop) dropBackend(ls *lsess) {
	ls.tgen++
	ls.mu.Lock()
	if ls.fd[1] >= 0 {
		rawClose(ls.fd[1])
		ls.fd[1] = -1
	}
	ls.mu.Unlock()
}

// connected: the backend accepted. The session joins the backend (its
// drain can close it from now on) and the copy starts with what the
// client sent meanwhile, after a ClientHello to replay.
func (lp *evloop) connected(ls *lsess) {
	ls.tgen++
	l, b := ls.l, ls.b
	if n := len(*b.aps.Load()); n > 1 {
		b.pref.Store(int32((int(b.pref.Load()) + ls.ai) % n)) // later sessions start here
	}
	if !l.attach(ls) {
		lp.abort(ls) // closed by a drain or Shutdown meanwhile
		return
	}
	ls.counter = [2]*atomic.Uint64{&b.bytesIn, &b.bytesOut}
	ls.state = stOpen
	if l.aborting.Load() {
		lp.abort(ls) // registered after Shutdown closed the sessions it saw
		return
	}
	if ls.replay != nil {
		l.replays.Add(1)
		ls.pend[0], ls.hello, ls.helloFull = ls.replay, ls.replay, true
		ls.replay = nil
		lp.arm(ls, ls.hs)
	}
	if ls.readable[0] || ls.pend[0] != nil {
		lp.step(ls, 0)
	}
}

// replayElsewhere moves ls, whose backend failed (why) before answering
// the ClientHello, to the next backend, where the ClientHello is sent
// again: nothing of the session has happened yet.
func (lp *evloop) replayElsewhere(ls *lsess, why error) {
	l, b := ls.l, ls.b
	if ls.closing.Load() {
		lp.abort(ls) // drained or shut down: not the backend's fault
		return
	}
	b.suspect(l.tun.Load())
	l.cfg.Logger.Warn("lb: backend failed before answering the TLS handshake; replaying it elsewhere", "backend", b.addr, "err", why)
	ls.tried = append(ls.tried, b)
	l.detach(ls)
	lp.dropBackend(ls)
	ls.replay, ls.hello, ls.helloFull = ls.hello, nil, false
	ls.pend[0], ls.pend[1] = nil, nil
	ls.readable[1], ls.rdhup[1], ls.eof[1] = false, false, false
	ls.b, ls.state = nil, stConnecting
	lp.dialNext(ls)
}

// timeout is a session's timer: a connect that took too long, or a
// backend that did not answer the ClientHello in time.
func (lp *evloop) timeout(ls *lsess) {
	switch {
	case ls.state == stConnecting && ls.fd[1] >= 0:
		lp.connectFailed(ls, fmt.Errorf("%w after %v", errConnectTimeout, ls.l.tun.Load().dialer.Timeout))
	case ls.state == stOpen && ls.helloFull:
		lp.replayElsewhere(ls, errHandshakeTimeout)
	}
}

// connectRaw opens a non-blocking socket to ap with the session options
// and starts connecting; done tells a connect that completed at once.
// delayAck: the client speaks first (see below).
func connectRaw(ap netip.AddrPort, keepAlive time.Duration, delayAck bool) (fd int, done bool, err error) {
	d := dialStates.Get().(*dialState)
	defer dialStates.Put(d)
	family := d.set(ap)
	fd, err = rawSocket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, false, os.NewSyscallError("socket", err)
	}
	if err := rawSetsockopt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		rawClose(fd)
		return -1, false, os.NewSyscallError("setsockopt", err)
	}
	if err := setKeepAlive(fd, keepAlive); err != nil {
		rawClose(fd)
		return -1, false, err
	}
	if delayAck {
		// Delayed ACKs from the start: the ACK of the SYN-ACK then
		// rides on the client's first bytes instead of going alone, and
		// the backend's answer is acknowledged with what follows it
		// (two packets of the ten a short connection costs on this
		// side; the backend's accept also returns with the ClientHello
		// already there). Only for clients that speak first, as TLS
		// clients do: a backend that spoke first would wait for the
		// kernel's delayed-ACK timer (200ms) before its accept returned.
		if err := rawSetsockopt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0); err != nil {
			rawClose(fd)
			return -1, false, os.NewSyscallError("setsockopt", err)
		}
	}
	for {
		_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&d.sa)), d.salen)
		switch e {
		case unix.EINTR:
			continue
		case unix.EINPROGRESS:
			return fd, false, nil
		case 0:
			return fd, true, nil
		}
		rawClose(fd)
		return -1, false, os.NewSyscallError("connect", e)
	}
}

// peerString is fd's peer address, for logs.
func peerString(fd int) string {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return "?"
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	}
	return "?"
}

// Timers of a loop: a heap by due time. A session has at most one live
// timer (connect or handshake); bumping its tgen cancels it, and the
// stale entry is dropped when it comes due.
type ltimer struct {
	at  int64 // monoNow units
	ls  *lsess
	gen uint32
	r   *loopReg // a listener to resume
}

type timerHeap []ltimer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(ltimer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = ltimer{}
	*h = old[:len(old)-1]
	return t
}

var monoBase = time.Now()

// monoNow is the monotonic clock in nanoseconds.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// arm sets ls's timer to d from now, replacing the one it had.
func (lp *evloop) arm(ls *lsess, d time.Duration) {
	ls.tgen++
	heap.Push(&lp.timers, ltimer{at: monoNow() + int64(d), ls: ls, gen: ls.tgen})
}

func (lp *evloop) armListener(r *loopReg, d time.Duration) {
	heap.Push(&lp.timers, ltimer{at: monoNow() + int64(d), r: r})
}

// fire runs the timers that are due.
func (lp *evloop) fire() {
	if len(lp.timers) == 0 {
		return
	}
	now := monoNow()
	for len(lp.timers) > 0 && lp.timers[0].at <= now {
		t := heap.Pop(&lp.timers).(ltimer)
		switch {
		case t.r != nil:
			lp.resume(t.r)
		case !t.ls.done && t.gen == t.ls.tgen:
			lp.timeout(t.ls)
		}
	}
}
