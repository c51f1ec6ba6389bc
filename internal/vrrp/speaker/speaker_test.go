package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/haplane/haplane/internal/vrrp"
)

// hub is an in-memory link for unit tests (the netns tests in
// test/e2e/vip run the real sockets): every write reaches every other
// connected conn.
type hub struct {
	mu    sync.Mutex // protects conns and cut
	conns []*memConn
	cut   map[netip.Addr]bool // partitioned hosts hear nobody
}

type memPkt struct {
	b        []byte
	src, dst netip.Addr
}

type memConn struct {
	h      *hub
	addr   netip.Addr
	in     chan memPkt
	closed chan struct{}
	once   sync.Once
	// writeBlock, when set, makes WriteTo wait until its deadline (a
	// stuck link).
	writeBlock atomic.Bool
	// writeDelay, when set, makes every write take that long before it
	// goes out (a slow link: adverts queue up behind it).
	writeDelay atomic.Int64

	mu   sync.Mutex // protects sent
	sent []sentAdvert
}

type sentAdvert struct {
	at   time.Time
	prio uint8
}

func (h *hub) conn(a netip.Addr) *memConn {
	c := &memConn{h: h, addr: a, in: make(chan memPkt, 64), closed: make(chan struct{})}
	h.mu.Lock()
	h.conns = append(h.conns, c)
	h.mu.Unlock()
	return c
}

func (c *memConn) ReadFrom(b []byte) (int, netip.Addr, netip.Addr, int, error) {
	select {
	case p := <-c.in:
		return copy(b, p.b), p.src, p.dst, vrrp.TTL, nil
	case <-c.closed:
		return 0, netip.Addr{}, netip.Addr{}, 0, errors.New("closed")
	}
}

func (c *memConn) WriteTo(b []byte, dst netip.Addr, deadline time.Time) error {
	if c.writeBlock.Load() {
		time.Sleep(time.Until(deadline))
		return errors.New("write timeout")
	}
	time.Sleep(time.Duration(c.writeDelay.Load()))
	c.mu.Lock()
	c.sent = append(c.sent, sentAdvert{at: time.Now(), prio: b[2]})
	c.mu.Unlock()
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	if c.h.cut[c.addr] {
		return nil
	}
	for _, o := range c.h.conns {
		// A unicast advert reaches its destination only.
		if o == c || c.h.cut[o.addr] || (!dst.IsMulticast() && o.addr != dst) {
			continue
		}
		select {
		case o.in <- memPkt{b: append([]byte(nil), b...), src: c.addr, dst: dst}:
		case <-o.closed:
		default:
		}
	}
	return nil
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) adverts() []sentAdvert {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent)
}

// memAddrs records address operations, and expires the addresses as the
// kernel does: lifetime after the last Take (on the test's clock).
type memAddrs struct {
	takeDelay time.Duration

	mu        sync.Mutex // protects the fields below
	held      bool
	expires   time.Time
	ops       []string
	takes     []time.Time
	announces []time.Time
}

func (a *memAddrs) Take(lifetime time.Duration) error {
	time.Sleep(a.takeDelay)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked()
	a.held = true
	a.expires = time.Now().Add(lifetime)
	a.ops = append(a.ops, "take")
	a.takes = append(a.takes, time.Now())
	return nil
}

// expireLocked drops addresses whose lifetime ran out. The caller holds mu.
func (a *memAddrs) expireLocked() {
	if a.held && !time.Now().Before(a.expires) {
		a.held = false
		a.ops = append(a.ops, "expired")
	}
}

func (a *memAddrs) takeTimes() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.takes)
}

func (a *memAddrs) Release() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.held = false
	a.ops = append(a.ops, "release")
	return nil
}

func (a *memAddrs) Announce() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked()
	if !a.held {
		panic("announce while not holding the address")
	}
	a.announces = append(a.announces, time.Now())
	a.ops = append(a.ops, "announce")
	return nil
}

func (a *memAddrs) holds() bool { a.mu.Lock(); defer a.mu.Unlock(); a.expireLocked(); return a.held }

func (a *memAddrs) announceTimes() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.announces)
}

type node struct {
	sp     *Speaker
	conn   *memConn
	addrs  *memAddrs
	cancel context.CancelFunc
	done   chan error
}

const iv = 100 * time.Millisecond

func startNode(t *testing.T, h *hub, host byte, prio uint8, mod func(*Config), takeDelay ...time.Duration) *node {
	t.Helper()
	primary := netip.AddrFrom4([4]byte{10, 77, 3, host})
	cfg := Config{VRRP: vrrp.Config{Version: 3, VRID: 51, Priority: prio, AdvertInterval: iv, Preempt: true,
		Primary: primary, Addrs: []netip.Addr{netip.MustParseAddr("10.77.3.100")}}}
	if mod != nil {
		mod(&cfg)
	}
	n := &node{conn: h.conn(primary), addrs: &memAddrs{}, done: make(chan error, 1)}
	if len(takeDelay) > 0 {
		n.addrs.takeDelay = takeDelay[0]
	}
	sp, err := New(cfg, n.conn, n.addrs)
	if err != nil {
		t.Fatal(err)
	}
	n.sp = sp
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- sp.Run(ctx) }()
	return n
}

func (n *node) stop(t *testing.T) {
	t.Helper()
	n.cancel()
	if err := <-n.done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// startPair starts a master (priority 150) and a backup (149) on h and
// waits until the first holds the addresses alone.
func startPair(t *testing.T, h *hub) (master, backup *node) {
	t.Helper()
	a := startNode(t, h, 1, 150, nil)
	b := startNode(t, h, 2, 149, nil)
	time.Sleep(time.Second)
	if got := holders(a, b); !slices.Equal(got, []int{0}) {
		t.Fatalf("holders %v, want [0]", got)
	}
	return a, b
}

func holders(ns ...*node) []int {
	var out []int
	for i, n := range ns {
		if n.addrs.holds() {
			out = append(out, i)
		}
	}
	return out
}

func TestElectionShutdownAndTakeover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		a := startNode(t, h, 1, 150, nil)
		b := startNode(t, h, 2, 149, nil)
		c := startNode(t, h, 3, 148, nil)
		time.Sleep(2 * time.Second)
		if got := holders(a, b, c); !slices.Equal(got, []int{0}) {
			t.Fatalf("holders %v, want [0]", got)
		}
		if st := a.sp.Status(); st.State != vrrp.Master || st.Priority != 150 {
			t.Errorf("a status %+v", st)
		}
		if st := b.sp.Status(); st.State != vrrp.Backup || st.Master != a.conn.addr {
			t.Errorf("b status %+v, want backup of %v", st, a.conn.addr)
		}
		// Shutdown: a priority-0 advert, then the address goes.
		stopped := time.Now()
		a.stop(t)
		ads := a.conn.adverts()
		if last := ads[len(ads)-1]; last.prio != 0 {
			t.Errorf("last advert at priority %d, want 0", last.prio)
		}
		if a.addrs.holds() {
			t.Error("address still held after shutdown")
		}
		time.Sleep(time.Second)
		if got := holders(a, b, c); !slices.Equal(got, []int{1}) {
			t.Fatalf("holders %v, want [1]", got)
		}
		// §6.4.2: after priority 0, Skew_Time (≈ 42 ms), not 3 intervals;
		// the address follows after the takeover hold (iv/4), in which a
		// better backup would be heard.
		if at := b.addrs.announceTimes(); len(at) == 0 || at[0].Sub(stopped) > 50*time.Millisecond+iv/4 {
			t.Errorf("b took over at %v after the shutdown, want ≤ 50ms + %v", at, iv/4)
		}
		b.stop(t)
		c.stop(t)
	})
}

// RFC 5798 §6.4.2: the priority-0 advert must be the last a leaving master
// sends. A normal advert after it (one queued behind a slow link) would
// make the backups wait Master_Down_Interval again instead of Skew_Time.
func TestPriorityZeroIsTheLastAdvert(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		a := startNode(t, h, 1, 150, nil)
		b := startNode(t, h, 2, 149, nil)
		time.Sleep(time.Second)
		if st := a.sp.Status(); st.State != vrrp.Master {
			t.Fatalf("a is %v, want master", st.State)
		}
		// Each write now takes 2.5 intervals: the send queue fills.
		a.conn.writeDelay.Store(int64(250 * time.Millisecond))
		time.Sleep(time.Second)
		stopped := time.Now()
		a.stop(t)
		ads := a.conn.adverts()
		zero := slices.IndexFunc(ads, func(x sentAdvert) bool { return x.prio == 0 })
		if zero < 0 {
			t.Fatal("no priority-0 advert sent on shutdown")
		}
		if after := ads[zero+1:]; len(after) > 0 {
			t.Errorf("%d adverts after the priority-0 one (priorities %v), want none", len(after), prios(after))
		}
		// Only the write in flight may delay it: not the whole queue.
		if d := ads[zero].at.Sub(stopped); d > 2*250*time.Millisecond {
			t.Errorf("priority-0 advert went out %v after the stop, want ≤ 2 slow writes", d)
		}
		time.Sleep(time.Second)
		if got := holders(a, b); !slices.Equal(got, []int{1}) {
			t.Errorf("holders %v, want [1]", got)
		}
		b.stop(t)
	})
}

func prios(ads []sentAdvert) []uint8 {
	var out []uint8
	for _, a := range ads {
		out = append(out, a.prio)
	}
	return out
}

// dropMetrics counts dropped adverts by reason.
type dropMetrics struct {
	nopMetrics
	mu      sync.Mutex // protects dropped
	dropped map[string]int
}

func (m *dropMetrics) AdvertDropped(r string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dropped == nil {
		m.dropped = map[string]int{}
	}
	m.dropped[r]++
}

func (m *dropMetrics) count(r string) int { m.mu.Lock(); defer m.mu.Unlock(); return m.dropped[r] }

// In unicast mode only the configured peers are routers of this link: a
// third router's adverts (here a better one, heard on the same hub) are
// dropped and counted, and neither peer yields to it.
func TestUnicastIgnoresUnknownSources(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		ma, mb := &dropMetrics{}, &dropMetrics{}
		pa, pb := netip.AddrFrom4([4]byte{10, 77, 3, 1}), netip.AddrFrom4([4]byte{10, 77, 3, 2})
		a := startNode(t, h, 1, 150, func(c *Config) { c.Peers, c.Metrics = []netip.Addr{pb}, ma })
		b := startNode(t, h, 2, 149, func(c *Config) { c.Peers, c.Metrics = []netip.Addr{pa}, mb })
		time.Sleep(time.Second)
		stranger := startNode(t, h, 9, 254, nil)
		time.Sleep(time.Second)
		if st := a.sp.Status(); st.State != vrrp.Master {
			t.Errorf("a is %v behind a router that is not its peer, want master", st.State)
		}
		if st := b.sp.Status(); st.State != vrrp.Backup || st.Master != pa {
			t.Errorf("b status %+v, want backup of its peer %v", st, pa)
		}
		// ~10 adverts a second from the stranger.
		if n := ma.count("unknown_peer"); n < 5 {
			t.Errorf("a counted %d adverts from an unknown peer, want ≥ 5", n)
		}
		if n := mb.count("unknown_peer"); n < 5 {
			t.Errorf("b counted %d adverts from an unknown peer, want ≥ 5", n)
		}
		stranger.stop(t)
		// The peers still hear each other: a's shutdown hands over to b.
		a.stop(t)
		time.Sleep(500 * time.Millisecond)
		if st := b.sp.Status(); st.State != vrrp.Master {
			t.Errorf("b is %v after its peer left, want master", st.State)
		}
		b.stop(t)
	})
}

func TestAnnounceRoundsAndCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		a := startNode(t, h, 1, 150, nil)
		time.Sleep(3 * time.Second)
		at := a.addrs.announceTimes()
		if len(at) != 6 {
			t.Fatalf("%d announcement rounds, want 3 + 3 repeated", len(at))
		}
		var offs []time.Duration
		for _, x := range at {
			offs = append(offs, x.Sub(at[0]))
		}
		want := []time.Duration{0, 20 * time.Millisecond, 40 * time.Millisecond, 500 * time.Millisecond, 520 * time.Millisecond, 540 * time.Millisecond}
		if !slices.Equal(offs, want) {
			t.Errorf("rounds at %v, want %v", offs, want)
		}
		a.stop(t)

		// A master that loses within the burst sends no more rounds (its
		// later rounds would point clients at a node without the VIP;
		// memAddrs panics on an announcement without the address).
		h = &hub{}
		b := startNode(t, h, 2, 100, nil)
		time.Sleep(time.Second)
		c := startNode(t, h, 3, 200, func(c *Config) { c.VRRP.Preempt = true })
		time.Sleep(2 * time.Second)
		if got := holders(b, c); !slices.Equal(got, []int{1}) {
			t.Fatalf("holders %v, want [1]", got)
		}
		b.stop(t)
		c.stop(t)
	})
}

func TestSlowAddressOperationsDoNotDelayAdverts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		// The owner is master at once, and its netlink calls hang for a
		// second each: adverts must keep their rhythm meanwhile. (The
		// lifetime outlasts one slow renewal.)
		a := startNode(t, h, 1, 255, func(c *Config) { c.AddressLifetime = 3 * time.Second }, time.Second)
		time.Sleep(2 * time.Second)
		ads := a.conn.adverts()
		if len(ads) < 20 {
			t.Fatalf("%d adverts in 2s, want ≥ 20", len(ads))
		}
		for i := 1; i < len(ads); i++ {
			if d := ads[i].at.Sub(ads[i-1].at); d > iv {
				t.Errorf("advert %d came %v after the previous, want ≤ %v while Take blocks", i, d, iv)
			}
		}
		if !a.addrs.holds() {
			t.Error("address not taken after the slow Take")
		}
		a.stop(t)
		// Renewals did not pile up behind the slow calls (8 in 2s): at
		// most one waited, so the queue drains soon after the stop.
		time.Sleep(10 * time.Second)
		if n := len(a.addrs.takeTimes()); n > 4 {
			t.Errorf("%d takes of 1s each done after 2s of mastership, want ≤ 4 (renewals coalesced)", n)
		}
	})
}

func TestStuckLinkDoesNotStallTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		a := startNode(t, h, 1, 150, func(c *Config) { c.WriteTimeout = 2 * time.Second })
		time.Sleep(time.Second)
		if st := a.sp.Status(); st.State != vrrp.Master {
			t.Fatalf("a is %v, want master", st.State)
		}
		// a's link is stuck: every write waits 2s. Its loop must still
		// hear b and hand over the address.
		a.conn.writeBlock.Store(true)
		b := startNode(t, h, 2, 200, nil)
		time.Sleep(time.Second)
		if st := a.sp.Status(); st.State != vrrp.Backup {
			t.Errorf("a is %v, want backup behind b despite its stuck sends", st.State)
		}
		if got := holders(a, b); !slices.Equal(got, []int{1}) {
			t.Errorf("holders %v, want [1]", got)
		}
		b.stop(t)
		a.conn.writeBlock.Store(false)
		a.stop(t)
	})
}

// countingCheck fails while failing is set.
type countingCheck struct {
	mu      sync.Mutex // protects failing
	failing bool
}

func (c *countingCheck) Check(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failing {
		return errors.New("down")
	}
	return nil
}

func (c *countingCheck) set(f bool) { c.mu.Lock(); c.failing = f; c.mu.Unlock() }

func TestTrackedCheckMovesTheVIP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		chk := &countingCheck{}
		a := startNode(t, h, 1, 150, func(c *Config) {
			c.Tracks = []Track{{Name: "apiserver", Check: chk, Weight: -60, Fall: 2, Rise: 2, Interval: 100 * time.Millisecond}}
		})
		b := startNode(t, h, 2, 149, nil)
		time.Sleep(time.Second)
		if got := holders(a, b); !slices.Equal(got, []int{0}) {
			t.Fatalf("holders %v, want [0]", got)
		}
		chk.set(true)
		time.Sleep(time.Second)
		if got := holders(a, b); !slices.Equal(got, []int{1}) {
			t.Fatalf("holders %v with a's check failing, want [1]", got)
		}
		if p := a.sp.Status().Priority; p != 90 {
			t.Errorf("a priority %d, want 150-60", p)
		}
		chk.set(false)
		time.Sleep(time.Second)
		if got := holders(a, b); !slices.Equal(got, []int{0}) {
			t.Fatalf("holders %v after recovery, want [0]", got)
		}
		a.stop(t)
		b.stop(t)
	})
}

func TestFromClusterAndValidation(t *testing.T) {
	if _, err := New(Config{VRRP: vrrp.Config{VRID: 1, Priority: 100, Primary: netip.MustParseAddr("10.77.3.1"),
		Addrs: []netip.Addr{netip.MustParseAddr("10.77.3.100")}}, Tracks: []Track{{Name: "x"}}}, nil, nil); err == nil {
		t.Error("track without a check accepted")
	}
	if _, err := New(Config{VRRP: vrrp.Config{VRID: 1, Priority: 100, Primary: netip.MustParseAddr("10.77.3.1"),
		Addrs: []netip.Addr{netip.MustParseAddr("10.77.3.100")}}, Peers: []netip.Addr{netip.MustParseAddr("fd00::1")}}, nil, nil); err == nil {
		t.Error("IPv6 peer for an IPv4 router accepted")
	}
}

func TestDropReason(t *testing.T) {
	for err, want := range map[error]string{
		vrrp.ErrTTL: "ttl", vrrp.ErrAuth: "auth", vrrp.ErrVRID: "vrid", vrrp.ErrVersion: "version",
		vrrp.ErrChecksum: "checksum", vrrp.ErrShort: "short", vrrp.ErrCount: "count", vrrp.ErrType: "type",
		vrrp.ErrInterval: "interval", vrrp.ErrIntervalMismatch: "interval_mismatch", vrrp.ErrFamily: "family",
		fmt.Errorf("decode: %w", vrrp.ErrIntervalMismatch): "interval_mismatch", errors.New("x"): "other",
	} {
		if got := DropReason(err); got != want {
			t.Errorf("DropReason(%v) = %q, want %q", err, got, want)
		}
	}
}

// stepMetrics records failover steps (FailoverObserver).
type stepMetrics struct {
	nopMetrics
	mu    sync.Mutex
	steps map[string]time.Duration
}

func (m *stepMetrics) FailoverStep(step string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.steps == nil {
		m.steps = map[string]time.Duration{}
	}
	m.steps[step] = d
}

func TestFailoverStepsAreTimed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		m := &stepMetrics{}
		a := startNode(t, h, 1, 150, nil)
		b := startNode(t, h, 2, 149, func(c *Config) { c.Metrics = m }, 30*time.Millisecond)
		time.Sleep(time.Second)
		a.stop(t)
		time.Sleep(time.Second)
		m.mu.Lock()
		steps := m.steps
		m.mu.Unlock()
		// Priority 0 makes b take over after its skew time (~42ms) since
		// the last advert; the take waits the takeover hold (iv/4), and
		// adding the address takes 30ms here.
		if d := steps["detect"]; d <= 0 || d > iv {
			t.Errorf("detect = %v, want within one advert interval", d)
		}
		if want := iv/4 + 30*time.Millisecond; steps["take"] < want || steps["take"] > want+10*time.Millisecond {
			t.Errorf("take = %v, want the hold %v and the 30ms the address took", steps["take"], iv/4)
		}
		if d, ok := steps["announce"]; !ok || d < steps["take"] {
			t.Errorf("announce = %v (recorded %v), want after the take", d, ok)
		}
		b.stop(t)
	})
}

// With no interval set, the speaker's timeouts follow the interval the
// state machine picks (vrrp.DefaultAdvertInterval), not a fixed 1s.
func TestDefaultsFollowTheInterval(t *testing.T) {
	for _, tc := range []struct {
		version        int
		write, release time.Duration
	}{{0, 100 * time.Millisecond, 300 * time.Millisecond}, {3, 100 * time.Millisecond, 300 * time.Millisecond}, {2, time.Second, time.Second}} {
		vc := vrrp.Config{Version: tc.version, VRID: 1, Priority: 100, Primary: netip.MustParseAddr("10.77.3.1"),
			Addrs: []netip.Addr{netip.MustParseAddr("10.77.3.100")}}
		sp, err := New(Config{VRRP: vc}, nil, nil)
		if err != nil {
			t.Fatalf("version %d: %v", tc.version, err)
		}
		// ReleaseDelay is 3 intervals, at most half the 2s ShutdownTimeout.
		if sp.cfg.WriteTimeout != tc.write || sp.cfg.ReleaseDelay != tc.release {
			t.Errorf("version %d: write timeout %v, release delay %v; want %v, %v", tc.version, sp.cfg.WriteTimeout, sp.cfg.ReleaseDelay, tc.write, tc.release)
		}
		if got := sp.Status().AdvertInterval; got != vrrp.DefaultAdvertInterval(tc.version).String() {
			t.Errorf("version %d: status interval %q", tc.version, got)
		}
	}
}
