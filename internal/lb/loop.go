package lb

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sessions run in a few raw epoll event loops, not on goroutines in the
// runtime poller, as haproxy and nginx run theirs: one loop per
// GOMAXPROCS, each an epoll set with every frontend's listening socket in
// it (EPOLLEXCLUSIVE: a new connection wakes one loop). The loop that
// accepts a connection keeps it to the end: it connects to the backend
// without blocking, waits for the connect and for the handshake timeout
// on its own timers, retries another backend when a connect fails,
// replays a ClientHello elsewhere when a backend fails before answering
// it, and copies the two directions. A session costs no goroutine, no
// *os.File and no runtime poller registration, which on a connection per
// request was most of what goroutine sessions spent in user space
// (docs/bench/lb.md). Backends given by name are resolved outside the
// session path (SetBackends, and again after failed connects), so a loop
// only ever connects to addresses.
//
// What the raw events also give is EPOLLRDHUP: a short read on an event
// without it means the socket is drained and any later byte or FIN brings
// a new edge, so the read that would only return EAGAIN is skipped.

// bufSize is each loop's read buffer; a read that fills it means a bulk
// transfer, where splicing beats the copy through user space.
const bufSize = 64 << 10

const (
	evIn    = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	evHup   = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	evFlags = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	// maxBurst bounds the full-buffer reads of one direction before the
	// loop serves other sessions (a bulk transfer goes on afterwards).
	maxBurst = 16
	// acceptBurst bounds the accepts of one listener event; the listener
	// is level-triggered, so the rest are taken on the next round.
	acceptBurst = 32
)

// The data of a loop's epoll events: Fd is a session's or a listener's
// id, Pad a side (below) and, for a backend socket, the generation of the
// socket (a replay or a retry replaces it; events of the old one that
// were already collected are ignored).
const (
	sideClient   = 0
	sideBackend  = 1
	sideListener = 2
	sideInbox    = 3 // the loop's eventfd: connections handed over by another loop
	genShift     = 2
	genMask      = 1<<29 - 1
)

// evloop is one event loop: an epoll instance served by one goroutine
// locked to its thread, which blocks in epoll_wait. The locked threads
// were about 10 % faster on a connection per request than the same loops
// waiting in the runtime poller (docs/bench/lb.md): a wake-up goes from
// the kernel straight to the loop, not through the runtime's netpoller
// and scheduler. It is the only session engine.
type evloop struct {
	epfd    int
	buf     []byte   // loop goroutine only
	again   []*lsess // directions cut short by maxBurst; loop goroutine only
	timers  timerHeap
	scanned time.Time
	// piped holds sessions that kept a pipe over an EAGAIN, with their
	// steps count then; the sweep every pipeSweep gives back the pipes of
	// those that had no event since. Loop goroutine only.
	piped map[*lsess]uint64
	swept time.Time

	// mu protects conns, lsns, nextID, idleN and idleMin: listeners are
	// registered by Serve, and tests look into conns.
	mu      sync.Mutex
	conns   map[uint32]*lsess
	lsns    map[uint32]*loopReg
	nextID  uint32
	idleN   int           // sessions with an idle timeout
	idleMin time.Duration // the shortest of their timeouts (since idleN was last 0)

	// load is len(conns), for the other loops to read without mu.
	load atomic.Int32

	// The inbox takes connections another loop accepted over its share
	// (hand): in holds them, pending counts them (read with load by
	// overShare), and a write to wakefd, in this loop's set, wakes it.
	inMu    sync.Mutex
	in      []handed
	spare   []handed // loop goroutine only
	pending atomic.Int32
	wakefd  int
}

// handed is an accepted client socket of l on its way to another loop.
type handed struct {
	l  *LB
	fd int
}

var (
	loopsOnce sync.Once
	loops     []*evloop
	loopErr   error
)

// startLoops starts the loops on first use, for the life of the process
// like the runtime's own poller, and returns them: n of them (Config.Loops
// of the first load balancer that serves), or one per GOMAXPROCS when n is
// 0. Later load balancers of the process share those loops whatever their
// own setting; LB.Engine reports what runs.
func startLoops(n int) ([]*evloop, error) {
	loopsOnce.Do(func() {
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
		if p := runtime.GOMAXPROCS(0); p < n+2 {
			// A loop thread waiting in epoll_wait gives up its P (sysmon
			// hands it on), and on waking needs a free one at once, or it
			// waits: two spare Ps beyond the loops' keep that wait short
			// and leave room for the rest of the process (checks, metrics,
			// etcd in an agent). With the loops' Ps only, the threads were
			// no faster than the runtime poller.
			runtime.GOMAXPROCS(n + 2)
		}
		for range n {
			lp, err := newLoop()
			if err != nil {
				loopErr = fmt.Errorf("lb: start event loop %d of %d: %w", len(loops)+1, n, err)
				break
			}
			loops = append(loops, lp)
		}
		if len(loops) > 0 {
			loopErr = nil // fewer loops than asked still serve
		}
		// Started once all exist: each reads the others' loads.
		for _, lp := range loops {
			go lp.run()
		}
	})
	return loops, loopErr
}

func newLoop() (*evloop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Pad: sideInbox}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return &evloop{epfd: epfd, wakefd: wfd, buf: make([]byte, bufSize), conns: map[uint32]*lsess{}, lsns: map[uint32]*loopReg{}, piped: map[*lsess]uint64{}}, nil
}

// A session's state in its loop.
const (
	stOpen       = iota // copying
	stConnecting        // waiting for a backend connect
)

// lsess is a session in a loop. Direction 0 is client to backend, 1
// backend to client; fd[0] is the client, fd[1] the backend, so direction
// d reads fd[d] and writes fd[1-d].
type lsess struct {
	l       *LB
	id      uint32
	idle    time.Duration
	counter [2]*atomic.Uint64
	// Loop goroutine only:
	state    int
	steps    uint64     // calls of step: a session with events moves
	b        *Backend   // the backend connected or being connected to
	ai       int        // addresses of b tried so far, less one
	attached *Backend   // b once connected (attach); drains find the session there
	tried    []*Backend // backends that failed this session
	bgen     uint32     // generation of fd[1]
	tgen     uint32     // generation of the session's timer; a bump cancels it
	pend     [2][]byte  // bytes read in direction d the peer did not take yet
	readable [2]bool    // fd[d] may have bytes (an edge not drained yet)
	rdhup    [2]bool    // fd[d] has its FIN (or an error) pending
	eof      [2]bool    // direction d ended
	burst    [2]bool    // direction d is on the again list
	// The handshake phase (HandshakeTimeout > 0): until the backend's
	// first byte, the client's bytes are kept while they are a prefix of
	// one TLS handshake record (watch); when they are exactly one record
	// (helloFull), a backend that fails before answering it is replaced
	// and the record replayed to the next.
	hs        time.Duration
	watch     bool
	helloFull bool
	hello     []byte
	replay    []byte // to send first once the next backend is connected
	// A direction whose read filled the buffer is a bulk transfer: it
	// splices in the kernel through a pooled pipe, held until its source
	// is drained and the pipe empty.
	pipe   [2]*splicePipe
	inPipe [2]int
	done   bool

	// mu protects fd against the shutdown of a drain or Shutdown racing
	// the loop's close (a closed number may be reused by then); closing
	// is set by those.
	mu      sync.Mutex
	fd      [2]int
	closing atomic.Bool
}

// shutdown ends the session from outside the loop: both sockets are shut
// down, which wakes the loop with EPOLLHUP (the client's socket is in the
// loop's set from the accept on), and the loop closes them.
func (ls *lsess) shutdown() {
	ls.closing.Store(true)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, fd := range ls.fd {
		if fd >= 0 {
			rawShutdown(fd, unix.SHUT_RDWR)
		}
	}
}

// register gives ls an id in the loop's table.
func (lp *evloop) register(ls *lsess) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	ls.id = freeID(&lp.nextID, lp.conns)
	lp.conns[ls.id] = ls
	lp.load.Add(1)
	if ls.idle > 0 {
		if lp.idleN == 0 || ls.idle < lp.idleMin {
			lp.idleMin = ls.idle
		}
		lp.idleN++
	}
}

// freeID returns the next id after *next that table does not use (0 is
// never one), and moves *next on to it.
func freeID[V any](next *uint32, table map[uint32]V) uint32 {
	for {
		*next++
		if _, used := table[*next]; *next != 0 && !used {
			return *next
		}
	}
}

// forget removes ls from the loop's table; it reports false when ls was
// not there (removed already).
func (lp *evloop) forget(ls *lsess) bool {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.conns[ls.id] != ls {
		return false
	}
	delete(lp.conns, ls.id)
	lp.load.Add(-1)
	if ls.idle > 0 {
		lp.idleN--
	}
	return true
}

func (lp *evloop) run() {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 256)
	batch := make([]*lsess, len(events))
	lbatch := make([]*loopReg, len(events))
	n := 0
	hot := false // the last wait returned events
	for {
		wait := lp.waitTime()
		switch {
		case len(lp.again) > 0 || wait == 0:
			n = epollWaitNow(uintptr(lp.epfd), events)
		default:
			ms := -1
			if wait > 0 {
				ms = int((wait + time.Millisecond - 1) / time.Millisecond)
			}
			if hot {
				// Busy: wait briefly without telling the scheduler. A
				// loop waiting in a system call the scheduler knows of
				// is found there by sysmon every 10ms (the goroutine
				// never reschedules) and its P taken, which keeps sysmon
				// polling every 20µs, thousands of wake-ups a second on
				// the machine's CPUs. Bounded, so a stop-the-world never
				// waits long for this P; a wait that ends empty goes
				// back to the scheduler-aware one, so an idle loop does
				// not hold a P.
				if ms < 0 || ms > hotWaitMS {
					ms = hotWaitMS
				}
				n = epollWaitRaw(uintptr(lp.epfd), events, ms)
			} else {
				var err error
				if n, err = unix.EpollWait(lp.epfd, events, ms); err != nil {
					n = 0
				}
			}
			hot = n > 0
		}
		inbox := false
		lp.mu.Lock()
		for i := range n {
			switch events[i].Pad & 3 {
			case sideListener:
				lbatch[i] = lp.lsns[uint32(events[i].Fd)]
			case sideInbox:
				inbox = true
			default:
				batch[i] = lp.conns[uint32(events[i].Fd)]
			}
		}
		lp.mu.Unlock()
		if inbox {
			lp.takeInbox()
		}
		for i := range n {
			if ls := batch[i]; ls != nil && !ls.done {
				lp.event(ls, events[i].Pad, events[i].Events)
			} else if r := lbatch[i]; r != nil {
				lp.accept(r)
			}
			batch[i], lbatch[i] = nil, nil
		}
		if len(lp.again) > 0 {
			again := lp.again
			lp.again = nil
			for _, ls := range again {
				for d := range 2 {
					if ls.burst[d] && !ls.done {
						ls.burst[d] = false
						lp.step(ls, d)
					}
				}
			}
		}
		lp.fire()
		if len(lp.piped) > 0 && time.Since(lp.swept) >= pipeSweep {
			lp.sweep()
		}
		if iv := lp.scanInterval(); iv > 0 && time.Since(lp.scanned) >= iv {
			lp.scan()
		}
	}
}

// pipeSweep is how often kept splice pipes of quiet sessions are given
// back: an idle session should hold no pipe (two descriptors).
const pipeSweep = time.Second

// sweep gives back the pipes of sessions that kept one and moved no byte
// since.
func (lp *evloop) sweep() {
	lp.swept = time.Now()
	for ls, seen := range lp.piped {
		if ls.done {
			delete(lp.piped, ls)
			continue
		}
		if ls.steps != seen {
			lp.piped[ls] = ls.steps
			continue
		}
		for d := range 2 {
			if !ls.readable[d] {
				lp.dropPipe(ls, d)
			}
		}
		if ls.pipe[0] == nil && ls.pipe[1] == nil {
			delete(lp.piped, ls)
		}
	}
}

// waitTime is how long the loop may wait for events: until its next
// timer, idle scan or pipe sweep; -1 when nothing is due.
func (lp *evloop) waitTime() time.Duration {
	wait := time.Duration(-1)
	if iv := lp.scanInterval(); iv > 0 {
		wait = max(iv-time.Since(lp.scanned), 0)
	}
	if len(lp.piped) > 0 {
		if t := max(pipeSweep-time.Since(lp.swept), 0); wait < 0 || t < wait {
			wait = t
		}
	}
	if len(lp.timers) > 0 {
		t := max(time.Duration(lp.timers[0].at-monoNow()), 0)
		if wait < 0 || t < wait {
			wait = t
		}
	}
	return wait
}

// hotWaitMS bounds a raw wait of a busy loop (see run).
const hotWaitMS = 2

// epollWaitRaw waits up to ms for events in a raw system call.
func epollWaitRaw(epfd uintptr, events []unix.EpollEvent, ms int) int {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(ms), 0, 0)
	if e != 0 {
		return 0
	}
	return int(r)
}

// epollWaitNow collects the ready events without waiting. A raw system
// call: it never blocks.
func epollWaitNow(epfd uintptr, events []unix.EpollEvent) int {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0
	}
	return int(r)
}

// scanInterval is how often the idle timeouts are checked: a quarter of
// the shortest idle timeout among the loop's sessions, at most a second;
// zero when none has one.
func (lp *evloop) scanInterval() time.Duration {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.idleN == 0 {
		return 0
	}
	return min(max(lp.idleMin/4, 10*time.Millisecond), time.Second)
}

// scan closes sessions idle for their idle timeout: the kernel knows when
// the client's socket last sent or received data.
func (lp *evloop) scan() {
	lp.scanned = time.Now()
	var idle []*lsess
	lp.mu.Lock()
	for _, ls := range lp.conns {
		if ls.idle > 0 && !ls.done && ls.state == stOpen {
			idle = append(idle, ls)
		}
	}
	lp.mu.Unlock()
	for _, ls := range idle {
		ls.mu.Lock()
		ti, err := unix.GetsockoptTCPInfo(ls.fd[0], unix.IPPROTO_TCP, unix.TCP_INFO)
		ls.mu.Unlock()
		// An error means the socket is gone: not idle.
		if err == nil && time.Duration(min(ti.Last_data_recv, ti.Last_data_sent))*time.Millisecond >= ls.idle {
			lp.abort(ls)
		}
	}
}

// event handles the events of one socket of ls.
func (lp *evloop) event(ls *lsess, pad int32, evs uint32) {
	if ls.closing.Load() {
		lp.abort(ls)
		return
	}
	side := int(pad & 3)
	if side == sideBackend && uint32(pad)>>genShift != ls.bgen&genMask {
		return // an earlier backend socket's
	}
	if ls.state == stConnecting {
		if side == sideClient {
			if evs&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				lp.abort(ls) // the client is gone (a reset) before its session began
				return
			}
			// Bytes or a FIN: read once the backend is there.
			ls.readable[0] = ls.readable[0] || evs&evIn != 0
			ls.rdhup[0] = ls.rdhup[0] || evs&evHup != 0
			return
		}
		if evs&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
			return
		}
		if !lp.connectDone(ls, evs) {
			return
		}
		// Connected: whatever else the event says is handled below.
	}
	if evs&evIn != 0 {
		ls.readable[side] = true
		if evs&evHup != 0 {
			ls.rdhup[side] = true
		}
		if !ls.pending(side) || evs&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			// (With bytes pending this direction waits for EPOLLOUT on
			// the peer; the edge is remembered in readable.)
			lp.step(ls, side)
		}
	}
	// The socket can take more: the direction writing to it goes on.
	if !ls.done && ls.state == stOpen && ls.pending(1-side) && evs&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		lp.step(ls, 1-side)
	}
}

// step moves what direction d has: bytes pending for its peer first, then
// what its source has queued, until the source is drained, the peer is
// full, or the source ended.
func (lp *evloop) step(ls *lsess, d int) {
	if ls.state != stOpen {
		return
	}
	ls.steps++
	src, dst := ls.fd[d], ls.fd[1-d]
	if p := ls.pend[d]; p != nil {
		n, ok := lp.send(ls, d, dst, p, 0)
		if !ok {
			return
		}
		if n < len(p) {
			ls.pend[d] = p[n:]
			return
		}
		ls.pend[d] = nil
	}
	if ls.inPipe[d] > 0 && !lp.flushPipe(ls, d) {
		return
	}
	moved := 0 // spliced in this step
	for burst := 0; ls.readable[d] && !ls.eof[d]; burst++ {
		if burst == maxBurst {
			if !ls.burst[d] {
				ls.burst[d] = true
				lp.again = append(lp.again, ls)
			}
			return
		}
		if p := ls.pipe[d]; p != nil {
			// A non-blocking splice returns after one pass over the
			// receive queue, so a short one says nothing: splice until
			// EAGAIN (the pipe is empty here, so EAGAIN is the socket's).
			m, err := rawSplice(src, p.w, pipeSize, spliceFlags)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				ls.readable[d] = false
				if moved < bufSize {
					// The transfer slowed down: back to reads into the
					// loop's buffer, without a pipe. (A step that moved
					// more keeps it for the next edge, which saves a
					// copy through user space on each; if no edge comes,
					// as after a large answer on a connection then kept
					// for a watch, the sweep takes it back.)
					lp.dropPipe(ls, d)
				} else if _, ok := lp.piped[ls]; !ok {
					lp.piped[ls] = ls.steps
				}
				return
			case err != nil:
				lp.abort(ls)
				return
			case m == 0:
				lp.dropPipe(ls, d)
				lp.ended(ls, d)
				return
			}
			ls.inPipe[d] = int(m)
			moved += int(m)
			if !lp.flushPipe(ls, d) {
				return
			}
			continue
		}
		n, err := rawRead(uintptr(src), lp.buf)
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			ls.readable[d] = false
			return
		default:
			if d == 1 && ls.helloFull {
				lp.replayElsewhere(ls, err)
				return
			}
			lp.abort(ls)
			return
		}
		if n == 0 {
			if d == 1 && ls.helloFull {
				lp.replayElsewhere(ls, errClosedBeforeAnswer)
				return
			}
			lp.ended(ls, d)
			return
		}
		if ls.watch || ls.helloFull {
			lp.handshakeBytes(ls, d, lp.buf[:n])
		}
		// A FIN queued behind these bytes (and the buffer not filled,
		// so they were all there is) is passed on right after them, by
		// the read that returns 0: MSG_MORE holds them for it, and the
		// bytes and the FIN leave in one segment instead of two. Not
		// when the client's FIN is to be held (ended), which would hold
		// the bytes with it.
		more := 0
		if ls.rdhup[d] && n < len(lp.buf) && !(d == 0 && ls.helloFull) {
			more = unix.MSG_MORE
		}
		w, ok := lp.send(ls, d, dst, lp.buf[:n], more)
		if !ok {
			return
		}
		if w < n {
			// The peer is full: keep the rest and stop reading this way
			// until EPOLLOUT on the peer.
			ls.pend[d] = append([]byte(nil), lp.buf[w:n]...)
			return
		}
		if n == len(lp.buf) {
			if p, _ := pipePool.Get().(*splicePipe); p != nil {
				ls.pipe[d] = p
			}
			continue
		}
		if !ls.rdhup[d] {
			// Drained, and no FIN queued: the next byte or FIN is a new
			// edge, so the read that would say EAGAIN is not made.
			ls.readable[d] = false
			return
		}
	}
}

// handshakeBytes follows the handshake phase through b, read in
// direction d: the client's bytes are kept while they are a prefix of one
// TLS handshake record, and the backend's first byte ends the phase.
func (lp *evloop) handshakeBytes(ls *lsess, d int, b []byte) {
	if d == 1 {
		ls.watch, ls.helloFull, ls.hello = false, false, nil
		ls.tgen++ // the handshake timer
		if ls.eof[0] {
			rawShutdown(ls.fd[1], unix.SHUT_WR) // the client's FIN, held until now
		}
		return
	}
	if ls.helloFull {
		// More than the one record before any answer: not replayable.
		ls.watch, ls.helloFull, ls.hello = false, false, nil
		ls.tgen++
		return
	}
	h := append(ls.hello, b...)
	need, ok := tlsRecordLen(h)
	switch {
	case !ok || len(h) > need:
		ls.watch, ls.hello = false, nil
	case len(h) == need:
		ls.watch, ls.helloFull, ls.hello = false, true, h
		lp.arm(ls, ls.hs)
	default:
		ls.hello = h
	}
}

const spliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK

// pending tells whether direction d has bytes its peer did not take yet.
func (ls *lsess) pending(d int) bool { return ls.pend[d] != nil || ls.inPipe[d] > 0 }

// flushPipe moves what direction d's pipe holds to the peer. It reports
// false when bytes are left (the peer is full) or the session ended.
func (lp *evloop) flushPipe(ls *lsess, d int) bool {
	p := ls.pipe[d]
	for ls.inPipe[d] > 0 {
		m, err := rawSplice(p.r, ls.fd[1-d], ls.inPipe[d], spliceFlags)
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return false
		case err != nil || m == 0:
			lp.abort(ls)
			return false
		default:
			ls.inPipe[d] -= int(m)
			ls.counter[d].Add(uint64(m))
		}
	}
	return true
}

// dropPipe gives direction d's pipe back to the pool once empty: an idle
// session holds none.
func (lp *evloop) dropPipe(ls *lsess, d int) {
	if p := ls.pipe[d]; p != nil && ls.inPipe[d] == 0 {
		pipePool.Put(p)
		ls.pipe[d] = nil
	}
}

// send writes b to fd and counts what went; it reports false when the
// session was aborted (a write error) or moved to another backend.
func (lp *evloop) send(ls *lsess, d, fd int, b []byte, flags int) (int, bool) {
	n := 0
	for n < len(b) {
		m, e := rawSend(uintptr(fd), b[n:], flags)
		switch e {
		case 0:
			n += m
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
		default:
			ls.counter[d].Add(uint64(n))
			if d == 0 && ls.helloFull {
				lp.replayElsewhere(ls, e)
			} else {
				lp.abort(ls)
			}
			return n, false
		}
		break
	}
	ls.counter[d].Add(uint64(n))
	return n, true
}

// ended: direction d's source sent its FIN, and everything before it
// reached the peer. The FIN is passed on (a half-close); when both
// directions ended the session is over.
//
// A client's FIN after its ClientHello is held until the backend answers
// (handshakeBytes passes it on): a backend that closes on the half-close
// must not be taken for one that failed the handshake.
func (lp *evloop) ended(ls *lsess, d int) {
	ls.eof[d] = true
	ls.readable[d] = false
	if ls.eof[1-d] {
		lp.abort(ls)
		return
	}
	if d == 0 && ls.helloFull {
		return
	}
	rawShutdown(ls.fd[1-d], unix.SHUT_WR)
}

// abort closes both sockets of ls and ends its session.
func (lp *evloop) abort(ls *lsess) {
	if ls.done {
		return
	}
	ls.done = true
	ls.tgen++
	ls.pend = [2][]byte{}
	ls.hello, ls.replay = nil, nil
	for d, p := range ls.pipe {
		if p == nil {
			continue
		}
		if ls.inPipe[d] == 0 {
			pipePool.Put(p)
		} else {
			// Bytes left in it belong to this broken session.
			p.cleanup.Stop()
			rawClose(p.r)
			rawClose(p.w)
		}
		ls.pipe[d] = nil
	}
	lp.forget(ls)
	ls.mu.Lock()
	for i, fd := range ls.fd {
		if fd >= 0 {
			rawClose(fd) // leaves the epoll set with its last descriptor
			ls.fd[i] = -1
		}
	}
	ls.mu.Unlock()
	ls.l.detach(ls)
	ls.l.sessions.Done()
}

// EngineStatus is what runs the sessions of a load balancer, for status.
type EngineStatus struct {
	// Loops is the number of event loops of the process (shared by every
	// load balancer in it); 0 when none could start.
	Loops int `json:"loops"`
	// Configured is this load balancer's Config.Loops (0: one per
	// GOMAXPROCS); it differs from Loops when another load balancer of
	// the process started the loops first.
	Configured int `json:"configured"`
	// GOMAXPROCS is the process's, which the loops raise to two more than
	// their number.
	GOMAXPROCS int `json:"gomaxprocs"`
}

// Engine reports the event loops serving l's sessions.
func (l *LB) Engine() EngineStatus {
	lps, _ := startLoops(l.cfg.Loops)
	return EngineStatus{Loops: len(lps), Configured: l.cfg.Loops, GOMAXPROCS: runtime.GOMAXPROCS(0)}
}
