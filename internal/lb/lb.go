// Package lb owns haplane's L4 load balancer: frontend listeners, the
// backend pool and its passive health (a failed connect makes a backend
// suspect and the client is retried elsewhere within the same accept),
// pure selection policies, and the splice-based byte copying between a
// client and its backend. Active health comes from outside through
// SetHealth; the package does not probe anything itself.
package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Defaults for Config.
const (
	DefaultConnectTimeout = 500 * time.Millisecond
	DefaultSuspectFor     = 2 * time.Second
	DefaultKeepAlive      = 30 * time.Second
	// DefaultHandshakeTimeout: a kube-apiserver answers a ClientHello in
	// milliseconds; one that takes a second is hung or starved, and the
	// client is better served by another.
	DefaultHandshakeTimeout = time.Second
)

// Config configures a load balancer.
type Config struct {
	// Frontends are the addresses (host:port) to listen on; at least one.
	Frontends []string
	// Backends are the initial backends (host:port); SetBackends changes
	// them later.
	Backends []string
	// Policy is "roundrobin" (default) or "leastconn".
	Policy string
	// ConnectTimeout bounds one connect to a backend before the client is
	// retried on the next (default 500ms): with one unreachable backend no
	// client waits more than this for its session to start.
	ConnectTimeout time.Duration
	// SuspectFor is how long a backend whose connect failed is skipped by
	// new connections (default 2s), unless it is the only one left. Active
	// checks decide Up/Down; this is the quick reaction between them.
	SuspectFor time.Duration
	// Drain closes the sessions of a backend this long after active checks
	// mark it down; zero leaves them open until they end by themselves.
	Drain time.Duration
	// HandshakeTimeout is how long a backend may take to answer a client's
	// TLS ClientHello (default 1s; negative disables what follows). Until
	// the backend's first byte the load balancer keeps the ClientHello,
	// and when the backend closes, resets or stays silent past this, the
	// client's connection is moved to another backend and the ClientHello
	// replayed there: nothing of the session has happened yet, so the
	// client sees a short delay instead of an error. This saves the
	// clients of a backend that dies after accepting them, or hangs
	// (SIGSTOP, a wedged process) with its kernel still accepting. The
	// first bytes are awaited at most ClientFirstWait; a client that does
	// not speak first (not TLS) is passed on unchanged.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a session after no byte went either way for this
	// long; zero (default) relies on TCP keep-alive only, which suits the
	// long, often silent watches of kube-apiserver clients.
	IdleTimeout time.Duration
	// KeepAlive is the TCP keep-alive period on both sides of a session
	// (default 30s; negative disables).
	KeepAlive time.Duration
	// FreeBind sets IP_FREEBIND on the listeners so a frontend on the VIP
	// binds before the VIP arrives on this host (no sysctl needed).
	FreeBind bool
	// ReusePort sets SO_REUSEPORT, so several processes can share a
	// frontend (a restart without a gap, or more cores).
	ReusePort bool
	// Loops is the number of event loops (locked threads, each an epoll
	// set) that run every session; 0 (default) is one per GOMAXPROCS.
	// The loops are started once per process, by the first load balancer
	// that serves, with its setting; later ones share them (Engine reports
	// what runs).
	Loops int
	// Logger receives session errors and backend state changes.
	Logger *slog.Logger
	// Registerer receives the load balancer's metrics; nil registers none.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Policy == "" {
		c.Policy = "roundrobin"
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.SuspectFor == 0 {
		c.SuspectFor = DefaultSuspectFor
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Frontends) == 0 {
		errs = append(errs, errors.New("lb: no frontend to listen on"))
	}
	for _, a := range append(slices.Clone(c.Frontends), c.Backends...) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("lb: address %q: %w", a, err))
		}
	}
	if c.Loops < 0 {
		errs = append(errs, fmt.Errorf("lb: loops %d must not be negative", c.Loops))
	}
	if c.ConnectTimeout < 0 || c.SuspectFor < 0 || c.Drain < 0 || c.IdleTimeout < 0 {
		errs = append(errs, errors.New("lb: connect timeout, suspect period, drain and idle timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Health is a backend's state as reported by active checks.
type Health int32

const (
	HealthUnknown Health = iota // not checked yet: usable
	HealthUp
	HealthDown
	// HealthLive is a backend that fails the readiness check but passes
	// the liveness check: skipped while any backend is ready, used when
	// none is (panic routing). Every apiserver is unready together when
	// etcd loses quorum, yet each still serves what needs no etcd.
	HealthLive
)

func (h Health) String() string {
	switch h {
	case HealthUp:
		return "up"
	case HealthDown:
		return "down"
	case HealthLive:
		return "live"
	}
	return "unknown"
}

// MarshalText renders the health as its name.
func (h Health) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// Backend is one server in the pool. Its counters are atomics read by the
// policies and the metrics without locks.
type Backend struct {
	addr         string
	target       target
	health       atomic.Int32 // a Health
	suspectUntil atomic.Int64 // unix nanoseconds; passive detection
	active       atomic.Int64 // open sessions
	total        atomic.Uint64
	failures     atomic.Uint64 // failed connects
	bytesIn      atomic.Uint64 // client to backend
	bytesOut     atomic.Uint64 // backend to client

	// mu protects sessions and drain.
	mu       sync.Mutex
	sessions map[*session]struct{}
	drain    *time.Timer
}

// Addr is the backend's host:port.
func (b *Backend) Addr() string { return b.addr }

// Active is the number of open sessions to the backend.
func (b *Backend) Active() int64 { return b.active.Load() }

func (b *Backend) usable(now int64) bool {
	h := Health(b.health.Load())
	return h != HealthDown && h != HealthLive && now >= b.suspectUntil.Load()
}

// Candidates is the pure choice of the backends a new session may go to,
// given each one's health and whether it is suspect (a failed connect):
// the ready ones (up, or not checked yet) that are not suspect; when there
// is none, the live ones (panic: the pool is in panic); when there is none
// of those either, every one, since a check can be wrong (a bad CA) and
// suspects recover. It returns the indexes and whether the pool panics.
func Candidates(health []Health, suspect []bool) (idx []int, panic bool) {
	for i, h := range health {
		if h != HealthDown && h != HealthLive && !suspect[i] {
			idx = append(idx, i)
		}
	}
	if len(idx) > 0 {
		return idx, false
	}
	for i, h := range health {
		if h == HealthLive && !suspect[i] {
			idx = append(idx, i)
		}
	}
	if len(idx) > 0 {
		return idx, true
	}
	for i := range health {
		idx = append(idx, i)
	}
	return idx, false
}

// BackendStatus is a snapshot of one backend.
type BackendStatus struct {
	Addr      string `json:"addr"`
	Health    Health `json:"health"`
	Suspect   bool   `json:"suspect"`
	Active    int64  `json:"active"`
	Total     uint64 `json:"total"`
	Failures  uint64 `json:"connectFailures"`
	BytesIn   uint64 `json:"bytesIn"`
	BytesOut  uint64 `json:"bytesOut"`
	InService bool   `json:"inService"` // in the current pool (not removed)
}

// LB is a TCP load balancer. Create it with New, bind with Listen, run
// Serve, and stop with Shutdown.
type LB struct {
	cfg     Config                     // fixed at New; Frontends, FreeBind, ReusePort, KeepAlive
	tun     atomic.Pointer[tunables]   // what Reconfigure changes, replaced whole
	pool    atomic.Pointer[[]*Backend] // current backends, replaced whole
	retries atomic.Uint64
	replays atomic.Uint64 // sessions moved before the backend's first byte
	noneOK  atomic.Uint64 // clients closed because every backend failed
	accepts atomic.Uint64

	// mu protects known, listeners, accepters and loopLns.
	mu        sync.Mutex
	known     map[string]*Backend // current backends plus removed ones with sessions
	listeners []net.Listener
	accepters []*sock         // a duplicate of each listener's descriptor that accept loops wait on
	loopLns   []*loopListener // the listeners the event loops accept on
	stopped   chan struct{}   // closed by closeListeners
	stopOnce  sync.Once

	loops    bool // sessions run in the event loops (loop.go); false only when none could start
	sessions sync.WaitGroup
	closing  atomic.Bool
	workers  workerPool
	aborting atomic.Bool // Shutdown's deadline passed: close every session
}

// New validates cfg (after applying defaults) and returns a load balancer
// that is not listening yet.
func New(cfg Config) (*LB, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tun, err := newTunables(cfg)
	if err != nil {
		return nil, err
	}
	l := &LB{cfg: cfg, known: map[string]*Backend{}, stopped: make(chan struct{}), loops: true}
	l.tun.Store(tun)
	l.SetBackends(cfg.Backends)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(collector{l}); err != nil {
			return nil, fmt.Errorf("lb: register metrics: %w", err)
		}
	}
	return l, nil
}

// SetBackends replaces the pool. Backends that stay keep their state and
// counters; sessions to removed backends are left to finish (they are not
// dropped), and new connections go only to the new set.
func (l *LB) SetBackends(addrs []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pool := make([]*Backend, 0, len(addrs))
	in := map[string]bool{}
	for _, a := range addrs {
		if in[a] {
			continue
		}
		in[a] = true
		b := l.known[a]
		if b == nil {
			b = &Backend{addr: a, target: parseTarget(a), sessions: map[*session]struct{}{}}
			l.known[a] = b
		}
		pool = append(pool, b)
	}
	for a, b := range l.known {
		if !in[a] && b.active.Load() == 0 {
			delete(l.known, a)
		}
	}
	l.pool.Store(&pool)
	l.cfg.Logger.Info("lb: backends", "addrs", addrs)
}

// SetHealth records the active-check verdict on the backend at addr. A
// backend going down is skipped by new connections at once; its sessions
// are closed after Config.Drain when that is set. Unknown addresses are
// ignored (the checker may lag a SetBackends).
func (l *LB) SetHealth(addr string, h Health) {
	l.mu.Lock()
	b := l.known[addr]
	l.mu.Unlock()
	if b == nil {
		return
	}
	old := Health(b.health.Swap(int32(h)))
	if old == h {
		return
	}
	l.cfg.Logger.Info("lb: backend health", "backend", addr, "from", old, "to", h)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drain != nil {
		b.drain.Stop()
		b.drain = nil
	}
	if h == HealthUp {
		b.suspectUntil.Store(0)
	}
	if d := l.tun.Load().drain; h == HealthDown && d > 0 {
		b.drain = time.AfterFunc(d, func() { l.drain(b) })
	}
}

// drain closes b's sessions if b is still down.
func (l *LB) drain(b *Backend) {
	if Health(b.health.Load()) != HealthDown {
		return
	}
	b.mu.Lock()
	ss := make([]*session, 0, len(b.sessions))
	for s := range b.sessions {
		ss = append(ss, s)
	}
	b.mu.Unlock()
	if len(ss) > 0 {
		l.cfg.Logger.Info("lb: drain period over, closing sessions", "backend", b.addr, "sessions", len(ss))
	}
	for _, s := range ss {
		s.close()
	}
}

// Backends returns a snapshot of every backend, current ones first in
// pool order, then removed ones that still have sessions.
func (l *LB) Backends() []BackendStatus {
	now := time.Now().UnixNano()
	pool := *l.pool.Load()
	l.mu.Lock()
	var gone []*Backend
	for a, b := range l.known {
		if !slices.ContainsFunc(pool, func(p *Backend) bool { return p.addr == a }) {
			gone = append(gone, b)
		}
	}
	l.mu.Unlock()
	out := make([]BackendStatus, 0, len(pool)+len(gone))
	for i, b := range append(slices.Clone(pool), gone...) {
		out = append(out, BackendStatus{
			Addr: b.addr, Health: Health(b.health.Load()), Suspect: now < b.suspectUntil.Load(),
			Active: b.active.Load(), Total: b.total.Load(), Failures: b.failures.Load(),
			BytesIn: b.bytesIn.Load(), BytesOut: b.bytesOut.Load(), InService: i < len(pool),
		})
	}
	return out
}

// Listen binds every frontend. If one fails, the ones already bound are
// closed again.
func (l *LB) Listen(ctx context.Context) error {
	// Keep-alive and TCP_NODELAY are set once on the listening socket,
	// whose options every accepted socket inherits, instead of system
	// calls per accept.
	lc := net.ListenConfig{KeepAlive: -1, Control: l.control}
	var lns []net.Listener
	for _, a := range l.cfg.Frontends {
		ln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return fmt.Errorf("lb: listen on %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	l.mu.Lock()
	l.listeners = append(l.listeners, lns...)
	l.mu.Unlock()
	return nil
}

// control sets the listener socket options asked for in Config.
func (l *LB) control(network, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if l.cfg.FreeBind {
			if network == "tcp6" {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			}
			if serr != nil {
				serr = fmt.Errorf("lb: set IP_FREEBIND: %w", serr)
				return
			}
		}
		if serr = setKeepAlive(int(fd), l.cfg.KeepAlive); serr != nil {
			return
		}
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			serr = fmt.Errorf("lb: set TCP_NODELAY: %w", err)
			return
		}
		if l.cfg.ReusePort {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				serr = fmt.Errorf("lb: set SO_REUSEPORT: %w", err)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Addrs returns the bound frontend addresses (useful with port 0).
func (l *LB) Addrs() []net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]net.Addr, 0, len(l.listeners))
	for _, ln := range l.listeners {
		out = append(out, ln.Addr())
	}
	return out
}

// Serve accepts on every frontend until ctx is done or Shutdown is called;
// it then closes the listeners and returns without waiting for sessions
// (Shutdown does that). Listen must have been called.
func (l *LB) Serve(ctx context.Context) error {
	l.mu.Lock()
	lns := slices.Clone(l.listeners)
	l.mu.Unlock()
	if len(lns) == 0 {
		return errors.New("lb: serve before listen")
	}
	stop := context.AfterFunc(ctx, l.closeListeners)
	defer stop()
	if l.loops {
		if ok, err := l.serveLoops(lns); ok || err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.acceptLoop(ln); err != nil {
				errc <- err
				l.closeListeners()
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc // nil when every loop ended because of shutdown
}

func (l *LB) closeListeners() {
	l.closing.Store(true)
	l.workers.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ln := range l.listeners {
		ln.Close()
	}
	for _, a := range l.accepters {
		a.Close()
	}
	for _, ll := range l.loopLns {
		ll.close()
	}
	l.stopOnce.Do(func() { close(l.stopped) })
}

// accepter returns a pollable duplicate of ln's descriptor to accept on
// with accept4 directly: a net.TCPListener's raw connection cannot wait
// for reads, and its Accept makes a net.TCPConn with system calls the
// proxy does not need. closeListeners closes it with ln.
func (l *LB) accepter(ln net.Listener) (*sock, error) {
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	a, err := newSock(nfd) // non-blocking, as the listener
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.accepters = append(l.accepters, a)
	l.mu.Unlock()
	if l.closing.Load() {
		a.Close() // closeListeners ran before we registered
	}
	return a, nil
}

func (l *LB) acceptLoop(ln net.Listener) error {
	a, err := l.accepter(ln)
	if err != nil {
		if l.closing.Load() {
			return nil
		}
		return fmt.Errorf("lb: accept on %s: %w", ln.Addr(), err)
	}
	acc := newAcceptor(a.rc)
	var backoff time.Duration
	for {
		c, err := acc.acceptOne()
		if err != nil {
			if l.closing.Load() {
				return nil
			}
			// Out of descriptors or a similar passing condition: wait a
			// little rather than spin or give up the frontend.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
				errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.EPERM) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.cfg.Logger.Warn("lb: accept", "frontend", ln.Addr(), "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("lb: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		l.accepts.Add(1)
		l.sessions.Add(1)
		l.workers.run(task{l: l, client: c})
	}
}

// Shutdown stops accepting and waits for sessions to end by themselves
// until ctx is done; then it closes those left and returns ctx's error.
func (l *LB) Shutdown(ctx context.Context) error {
	l.closeListeners()
	l.probeClients()
	done := make(chan struct{})
	go func() { l.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	l.aborting.Store(true)
	ss := l.attached()
	for _, s := range ss {
		s.close()
	}
	<-done
	return fmt.Errorf("lb: shutdown closed %d sessions still open: %w", len(ss), ctx.Err())
}

// attached returns the sessions attached to a backend, current or removed.
func (l *LB) attached() []*session {
	l.mu.Lock()
	bs := make([]*Backend, 0, len(l.known))
	for _, b := range l.known {
		bs = append(bs, b)
	}
	l.mu.Unlock()
	var ss []*session
	for _, b := range bs {
		b.mu.Lock()
		for s := range b.sessions {
			ss = append(ss, s)
		}
		b.mu.Unlock()
	}
	return ss
}

// shutdownKeepAlive is the keep-alive of client sockets while a shutdown
// drains: the first probe after 1s of silence, dead after two unanswered.
var shutdownKeepAlive = [...][3]int{{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
	{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 1}, {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 1}, {unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 2}}

// probeClients shortens the keep-alive of every session's client socket
// for the drain. When the VIP has moved to another host, as it has when an
// agent stops, a client of this host is gone for good: its packets and
// its answer to anything this host sends reach the new holder, which
// resets them, and this host hears nothing. Only keep-alive ends such a
// session, and with the normal period (30s) it outlives the stop timeout.
// A live client answers the probes and its session drains as before.
func (l *LB) probeClients() {
	set := func(fd int) {
		for _, o := range shutdownKeepAlive {
			_ = rawSetsockopt(fd, o[0], o[1], o[2])
		}
	}
	for _, s := range l.attached() {
		s.mu.Lock()
		ls, c := s.ls, s.client
		s.mu.Unlock()
		switch {
		case ls != nil:
			ls.mu.Lock()
			if ls.fd[0] >= 0 {
				set(ls.fd[0])
			}
			ls.mu.Unlock()
		case c != nil:
			_ = c.rc.Control(func(fd uintptr) { set(int(fd)) })
		}
	}
}

// pick chooses a backend not in tried: a usable one if any, else any.
func (l *LB) pick(tried []*Backend) *Backend {
	pool := *l.pool.Load()
	now := time.Now().UnixNano()
	left := make([]*Backend, 0, len(pool))
	for _, b := range pool {
		if !slices.Contains(tried, b) {
			left = append(left, b)
		}
	}
	health, suspect := make([]Health, len(left)), make([]bool, len(left))
	for i, b := range left {
		health[i], suspect[i] = Health(b.health.Load()), now < b.suspectUntil.Load()
	}
	idx, _ := Candidates(health, suspect)
	cand := make([]*Backend, len(idx))
	for i, j := range idx {
		cand[i] = left[j]
	}
	return l.tun.Load().policy.Select(cand)
}

// Panic reports whether the pool is in panic: no backend ready, some live
// (see Candidates).
func (l *LB) Panic() bool {
	pool := *l.pool.Load()
	now := time.Now().UnixNano()
	health, suspect := make([]Health, len(pool)), make([]bool, len(pool))
	for i, b := range pool {
		health[i], suspect[i] = Health(b.health.Load()), now < b.suspectUntil.Load()
	}
	_, p := Candidates(health, suspect)
	return p
}

// connect dials backends in policy order, starting with first when set
// (already picked: picking again would move the policy on twice), until
// one accepts. A backend that refuses or times out is made suspect at once
// and the next is tried.
func (l *LB) connect(client *sock, first *Backend, tried *[]*Backend) (*Backend, *sock) {
	for {
		b := first
		first = nil
		if b == nil {
			b = l.pick(*tried)
		}
		if b == nil {
			l.noneOK.Add(1)
			l.cfg.Logger.Warn("lb: no backend accepted the connection", "client", client.RemoteAddr(), "tried", len(*tried))
			return nil, nil
		}
		if len(*tried) > 0 {
			l.retries.Add(1)
		}
		tun := l.tun.Load()
		c, err := dial(b, tun, l.cfg.KeepAlive)
		if err == nil {
			return b, c
		}
		l.connectFailed(b, tun, err)
		*tried = append(*tried, b)
	}
}

// connectFailed is passive detection: a backend that refused or timed out
// is skipped by new connections for the suspect period.
func (l *LB) connectFailed(b *Backend, tun *tunables, err error) {
	b.suspect(tun)
	l.cfg.Logger.Warn("lb: backend connect failed, retrying elsewhere", "backend", b.addr, "err", err)
}

// suspect counts a failure of b and has new connections skip it for the
// suspect period.
func (b *Backend) suspect(tun *tunables) {
	b.failures.Add(1)
	b.suspectUntil.Store(time.Now().Add(tun.suspectFor).UnixNano())
}

// session is one client and its backend.
type session struct {
	client  *sock
	once    sync.Once
	ended   atomic.Int32 // directions that reached EOF
	running atomic.Int32 // directions still copying; the last one out ends the session
	up      pump         // client to backend
	down    pump         // backend to client

	// mu protects b, backend and closed: before the backend's first byte
	// the handler may move the session to another backend while a drain
	// or Shutdown closes it.
	mu      sync.Mutex
	b       *Backend
	backend *sock
	closed  bool
	ls      *lsess // the copy phase runs in an event loop
}

// close aborts both sides; the copy goroutines then return.
func (s *session) close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		bc, ls := s.backend, s.ls
		s.mu.Unlock()
		if ls != nil {
			// The loop owns the descriptors (and closes them).
			ls.shutdown()
			return
		}
		if s.client != nil {
			s.client.Close()
		}
		if bc != nil {
			bc.Close()
		}
	})
}

func (s *session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// attach makes b, reached over bc, the backend of s. It reports false
// (and closes bc) when s was closed meanwhile. A session of an event loop
// has no bc: the loop holds its descriptors.
func (l *LB) attach(s *session, b *Backend, bc *sock) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if bc != nil {
			bc.Close()
		}
		return false
	}
	s.b, s.backend = b, bc
	if bc != nil {
		s.up.init(bc, s.client, &b.bytesIn)
		s.down.init(s.client, bc, &b.bytesOut)
	}
	s.mu.Unlock()
	b.mu.Lock()
	b.sessions[s] = struct{}{}
	b.mu.Unlock()
	b.active.Add(1)
	b.total.Add(1)
	return true
}

// detach undoes attach: s leaves its backend, whose connection is closed.
func (l *LB) detach(s *session) {
	s.mu.Lock()
	b, bc := s.b, s.backend
	s.b, s.backend = nil, nil
	s.mu.Unlock()
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.sessions, s)
	b.mu.Unlock()
	b.active.Add(-1)
	if bc != nil {
		bc.Close()
	}
}

// handle runs a session on goroutines, from the first connect (to first
// when set: an event loop picked it; tried lists the backends that failed
// already) to its end.
func (l *LB) handle(client *sock, first *Backend, tried []*Backend) {
	b, bc := l.connect(client, first, &tried)
	if b == nil {
		client.Close()
		l.sessions.Done()
		return
	}
	s := &session{client: client}
	s.running.Store(2)
	l.attach(s, b, bc)
	if l.aborting.Load() {
		// Registered after Shutdown closed the sessions it saw.
		s.close()
	}
	if hs := l.tun.Load().handshake; hs > 0 && !l.handshake(s, hs, tried) {
		s.running.Store(1) // no direction runs: this release ends it
		l.release(s)
		return
	}
	if l.loops && l.toLoop(s) {
		return
	}
	l.workers.run(task{l: l, s: s})
	l.copy(s, &s.down)
	l.release(s)
}

// release is called by each direction of s when it is done; the last one
// ends the session, so no goroutine waits for the other.
func (l *LB) release(s *session) {
	if s.running.Add(-1) > 0 {
		return
	}
	s.close()
	l.detach(s)
	l.sessions.Done()
}

// copy moves bytes from src to dst until src ends, then half-closes dst so
// the other side sees the end of this direction while the reverse goes on.
//
// A session that waits holds no buffer and no pipe: the read is attempted
// inside the runtime poller's callback with a buffer taken from a pool
// only for that attempt, so 10,000 idle sessions cost their goroutines and
// nothing else. (Go's own splice keeps a pipe, two descriptors, for as long
// as it waits.) When a read fills the whole buffer and more is queued, the
// transfer is a bulk one and the queued bytes are spliced in the kernel by
// splice (through a pooled pipe), exactly as many as are queued so the
// splice never waits.
func (l *LB) copy(s *session, p *pump) {
	idle := l.tun.Load().idle
	for {
		if idle > 0 {
			_ = p.src.SetReadDeadline(time.Now().Add(idle))
		}
		err := p.step()
		if err == io.EOF {
			// src ended its direction: pass the FIN on, unless the other
			// direction ended already and the close that follows sends it.
			if s.ended.Add(1) < 2 {
				_ = p.dst.CloseWrite()
			}
			return
		}
		if err == nil {
			continue
		}
		if idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// The deadline covers one direction; the session is idle only
			// if nothing went the other way either. The kernel knows.
			if since := idleFor(s.client); since < idle {
				continue
			}
		}
		// A reset, a drain, an idle timeout: the session ends both ways.
		s.close()
		return
	}
}

// bufSize is the copy buffer; a read that fills it means a bulk transfer,
// where splicing beats the userspace copy.
const bufSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// pump is one direction of a session. Its poller callback is bound once,
// so that a step allocates nothing.
type pump struct {
	dst, src *sock
	counter  *atomic.Uint64
	readFn   func(fd uintptr) bool // p.read
	// Set by read:
	bp   *[]byte
	n    int
	rerr error
}

func (p *pump) init(dst, src *sock, counter *atomic.Uint64) {
	p.dst, p.src, p.counter, p.n = dst, src, counter, 0
	p.readFn = p.read
}

// read is the callback of src's poller wait: one read attempt into a
// pooled buffer, which it keeps only when data came.
func (p *pump) read(fd uintptr) bool {
	if p.bp == nil {
		p.bp = bufPool.Get().(*[]byte)
	}
	p.n, p.rerr = rawRead(fd, *p.bp)
	if p.rerr == unix.EAGAIN || p.rerr == unix.EINTR {
		// Nothing yet: give the buffer back while we wait.
		bufPool.Put(p.bp)
		p.bp = nil
		return false
	}
	return true
}

// step waits for data on src and moves what is there to dst. It returns
// io.EOF when src has finished sending.
func (p *pump) step() error {
	err := p.src.rc.Read(p.readFn)
	bp := p.bp
	p.bp = nil
	if bp != nil {
		defer bufPool.Put(bp)
	}
	if err != nil {
		return err
	}
	if p.rerr != nil {
		return os.NewSyscallError("read", p.rerr)
	}
	n := p.n
	if n == 0 {
		return io.EOF
	}
	w, err := p.dst.Write((*bp)[:n])
	p.counter.Add(uint64(w))
	if err != nil || n < bufSize {
		return err
	}
	// A full buffer: splice whatever else is queued.
	var q int
	if err := p.src.rc.Control(func(fd uintptr) { q, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || q < bufSize {
		return nil
	}
	return splice(p.dst, p.src, q, func(m int) { p.counter.Add(uint64(m)) })
}

// idleFor is how long ago c last sent or received data, from TCP_INFO.
func idleFor(c *sock) time.Duration {
	var ms uint32 = 1<<32 - 1
	_ = c.rc.Control(func(fd uintptr) {
		if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			ms = min(ti.Last_data_recv, ti.Last_data_sent)
		}
	})
	return time.Duration(ms) * time.Millisecond
}
