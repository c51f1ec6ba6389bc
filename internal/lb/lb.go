// Package lb owns haplane's L4 load balancer: frontend listeners, the
// backend pool and its passive health (a failed connect makes a backend
// suspect and the client is retried elsewhere within the same accept),
// pure selection policies, and the event loops (loop.go) that run every
// session, from the accept to the last byte. Active health comes from
// outside through SetHealth; the package does not probe anything itself.
package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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
	// them later. A host given by name is resolved when it joins the pool
	// and again after its connects fail, never on a session's path.
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
	// (SIGSTOP, a wedged process) with its kernel still accepting. A
	// client that does not speak first, or whose first bytes are not one
	// TLS record, is passed on unchanged.
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
	name         string                           // the host to resolve; "" for an IP literal
	aps          atomic.Pointer[[]netip.AddrPort] // where to connect; empty while a name does not resolve
	pref         atomic.Int32                     // index in aps of the address that last accepted
	resolving    atomic.Bool
	health       atomic.Int32 // a Health
	suspectUntil atomic.Int64 // unix nanoseconds; passive detection
	active       atomic.Int64 // open sessions
	total        atomic.Uint64
	failures     atomic.Uint64 // failed connects
	bytesIn      atomic.Uint64 // client to backend
	bytesOut     atomic.Uint64 // backend to client

	// mu protects sessions and drain.
	mu       sync.Mutex
	sessions map[*lsess]struct{}
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

	// mu protects known, listeners and loopLns.
	mu        sync.Mutex
	known     map[string]*Backend // current backends plus removed ones with sessions
	listeners []net.Listener
	loopLns   []*loopListener // the listeners the event loops accept on
	stopped   chan struct{}   // closed by closeListeners
	stopOnce  sync.Once

	sessions sync.WaitGroup
	closing  atomic.Bool
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
	l := &LB{cfg: cfg, known: map[string]*Backend{}, stopped: make(chan struct{})}
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
// dropped), and new connections go only to the new set. New backends
// given by name are resolved first (together, within resolveTimeout), so
// that the event loops connect to addresses.
func (l *LB) SetBackends(addrs []string) {
	l.mu.Lock()
	var fresh []*Backend
	pool := make([]*Backend, 0, len(addrs))
	in := map[string]bool{}
	for _, a := range addrs {
		if in[a] {
			continue
		}
		in[a] = true
		b := l.known[a]
		if b == nil {
			b = newBackend(a)
			fresh = append(fresh, b)
		}
		pool = append(pool, b)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, b := range fresh {
		if b.name != "" {
			wg.Go(func() { l.resolve(b) })
		}
	}
	wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, b := range pool {
		if k := l.known[b.addr]; k != nil {
			pool[i] = k // added by a SetBackends that ran meanwhile
		} else {
			l.known[b.addr] = b
		}
	}
	for a, b := range l.known {
		if !in[a] && b.active.Load() == 0 {
			delete(l.known, a)
		}
	}
	l.pool.Store(&pool)
	l.cfg.Logger.Info("lb: backends", "addrs", addrs)
}

func newBackend(addr string) *Backend {
	b := &Backend{addr: addr, sessions: map[*lsess]struct{}{}}
	aps := []netip.AddrPort{}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		aps = append(aps, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	} else {
		b.name, _, _ = net.SplitHostPort(addr) // validated by Config and callers
	}
	b.aps.Store(&aps)
	return b
}

// resolveTimeout bounds one resolution of a backend's name.
const resolveTimeout = 2 * time.Second

// resolve looks b's name up and stores its addresses; on a failure it
// keeps the ones it had (a resolver that hiccups does not empty a
// working backend).
func (l *LB) resolve(b *Backend) {
	_, port, _ := net.SplitHostPort(b.addr)
	pn, err := net.LookupPort("tcp", port)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		defer cancel()
		var ips []netip.Addr
		if ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", b.name); err == nil {
			aps := make([]netip.AddrPort, 0, len(ips))
			for _, ip := range ips {
				aps = append(aps, netip.AddrPortFrom(ip.Unmap(), uint16(pn)))
			}
			if old := *b.aps.Load(); !slices.Equal(old, aps) {
				b.aps.Store(&aps)
				b.pref.Store(0)
				l.cfg.Logger.Info("lb: backend resolved", "backend", b.addr, "addrs", aps)
			}
			return
		}
	}
	l.cfg.Logger.Warn("lb: resolve backend", "backend", b.addr, "err", err)
}

// reresolve looks b's name up again in the background, after its
// connects failed: the name may point elsewhere now.
func (l *LB) reresolve(b *Backend) {
	if b.name == "" || !b.resolving.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer b.resolving.Store(false)
		l.resolve(b)
	}()
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
	ss := make([]*lsess, 0, len(b.sessions))
	for s := range b.sessions {
		ss = append(ss, s)
	}
	b.mu.Unlock()
	if len(ss) > 0 {
		l.cfg.Logger.Info("lb: drain period over, closing sessions", "backend", b.addr, "sessions", len(ss))
	}
	for _, s := range ss {
		s.shutdown()
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
// (Shutdown does that). Listen must have been called. The event loops
// accept and run every session (loop.go).
func (l *LB) Serve(ctx context.Context) error {
	l.mu.Lock()
	lns := slices.Clone(l.listeners)
	l.mu.Unlock()
	if len(lns) == 0 {
		return errors.New("lb: serve before listen")
	}
	stop := context.AfterFunc(ctx, l.closeListeners)
	defer stop()
	lps, err := startLoops(l.cfg.Loops)
	if len(lps) == 0 {
		l.closeListeners()
		return err
	}
	var lls []*loopListener
	for _, ln := range lns {
		ll, err := newLoopListener(l, ln, lps)
		if err != nil {
			for _, ll := range lls {
				ll.close()
			}
			if l.closing.Load() {
				return nil
			}
			l.closeListeners()
			return fmt.Errorf("lb: accept on %s: %w", ln.Addr(), err)
		}
		lls = append(lls, ll)
	}
	l.mu.Lock()
	l.loopLns = append(l.loopLns, lls...)
	l.mu.Unlock()
	if l.closing.Load() {
		for _, ll := range lls {
			ll.close() // closeListeners ran before we registered
		}
	}
	<-l.stopped
	return nil
}

func (l *LB) closeListeners() {
	l.closing.Store(true)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ln := range l.listeners {
		ln.Close()
	}
	for _, ll := range l.loopLns {
		ll.close()
	}
	l.stopOnce.Do(func() { close(l.stopped) })
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
		s.shutdown()
	}
	<-done
	return fmt.Errorf("lb: shutdown closed %d sessions still open: %w", len(ss), ctx.Err())
}

// attached returns the sessions attached to a backend, current or removed.
func (l *LB) attached() []*lsess {
	l.mu.Lock()
	bs := make([]*Backend, 0, len(l.known))
	for _, b := range l.known {
		bs = append(bs, b)
	}
	l.mu.Unlock()
	var ss []*lsess
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
	for _, ls := range l.attached() {
		ls.mu.Lock()
		if ls.fd[0] >= 0 {
			for _, o := range shutdownKeepAlive {
				_ = rawSetsockopt(ls.fd[0], o[0], o[1], o[2])
			}
		}
		ls.mu.Unlock()
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

// connectFailed is passive detection: a backend that refused or timed out
// (on every address it has) is skipped by new connections for the
// suspect period, and a name is looked up again.
func (l *LB) connectFailed(b *Backend, tun *tunables, err error) {
	b.suspect(tun)
	l.reresolve(b)
	l.cfg.Logger.Warn("lb: backend connect failed, retrying elsewhere", "backend", b.addr, "err", err)
}

// suspect counts a failure of b and has new connections skip it for the
// suspect period.
func (b *Backend) suspect(tun *tunables) {
	b.failures.Add(1)
	b.suspectUntil.Store(time.Now().Add(tun.suspectFor).UnixNano())
}

// attach makes ls's backend ls.b its attached one (drains and Shutdown
// find it there). It reports false when ls is being closed already.
func (l *LB) attach(ls *lsess) bool {
	if ls.closing.Load() {
		return false
	}
	b := ls.b
	b.mu.Lock()
	b.sessions[ls] = struct{}{}
	b.mu.Unlock()
	b.active.Add(1)
	b.total.Add(1)
	ls.attached = b
	return true
}

// detach undoes attach.
func (l *LB) detach(ls *lsess) {
	b := ls.attached
	if b == nil {
		return
	}
	ls.attached = nil
	b.mu.Lock()
	delete(b.sessions, ls)
	b.mu.Unlock()
	b.active.Add(-1)
}
