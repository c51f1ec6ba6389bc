// Package speaker is the VRRP runtime of one node: it owns a vrrp.Machine on
// a dedicated goroutine and connects it to the network (a Conn carrying
// adverts), to the virtual addresses (an Addrs that adds, removes and
// announces them), to tracked health checks and to a real clock.
//
// Sending adverts never waits behind other work: adverts go out on their own
// goroutine with a write deadline, and the slow address operations (netlink,
// ARP bursts) run on another, so neither a busy link nor a slow netlink call
// delays the next advert or the processing of a received one.
package speaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haplane/haplane/internal/vrrp"
)

// Conn carries VRRP packets on one link. ReadFrom and WriteTo are called
// from different goroutines at the same time; Close unblocks ReadFrom.
type Conn interface {
	// ReadFrom returns the next VRRP message (the IP payload), its IP
	// source and destination, and its TTL or hop limit (-1 if unknown).
	ReadFrom(b []byte) (n int, src, dst netip.Addr, ttl int, err error)
	// WriteTo sends the message b to dst with TTL 255, giving up at
	// deadline.
	WriteTo(b []byte, dst netip.Addr, deadline time.Time) error
	Close() error
}

// Addrs owns the virtual addresses on the link. Its methods are called from
// one goroutine, in order.
type Addrs interface {
	// Take adds the addresses, or refreshes those already present, valid
	// for lifetime: once it runs out without another Take, the kernel
	// removes them by itself. The speaker calls it again (renews) every
	// RenewInterval(lifetime) while it is a working master.
	Take(lifetime time.Duration) error
	// Release removes them; removing an absent one is not an error.
	Release() error
	// Announce sends one round of gratuitous ARPs / unsolicited
	// neighbour advertisements for them. The speaker spaces the rounds
	// of a burst itself, so a release can cut a burst short.
	Announce() error
}

// Checker is one tracked health check, supplied by the consumer (the agent
// feeds load balancer and apiserver health through it).
type Checker interface {
	Check(ctx context.Context) error
}

// CheckFunc adapts a function to Checker.
type CheckFunc func(ctx context.Context) error

// Check calls f.
func (f CheckFunc) Check(ctx context.Context) error { return f(ctx) }

// Track is a tracked check and how it moves the priority (keepalived's
// convention: a negative Weight applies while the check is down, a
// positive one while it is up).
type Track struct {
	Name   string
	Check  Checker
	Weight int
	// Fall failures in a row mark the check down, Rise successes up
	// (default 1 each).
	Fall, Rise int
	// Interval between checks (default 1s); each check gets Interval as
	// its timeout.
	Interval time.Duration
}

// Metrics receives the speaker's counters. Calls come from the speaker's
// goroutines and must not block.
type Metrics interface {
	AdvertSent()
	AdvertReceived()
	// AdvertDropped counts a received packet that was ignored, by reason
	// (DropReason of the error).
	AdvertDropped(reason string)
	SendFailed()
	Transition(from, to vrrp.State)
	Priority(p uint8)
}

// Config configures a Speaker.
type Config struct {
	// VRRP is the virtual router; see vrrp.Config.
	VRRP vrrp.Config
	// Peers, when set, are the unicast destinations of adverts; otherwise
	// adverts go to the VRRP multicast group of the address family.
	Peers []netip.Addr
	// Tracks adjust the priority (see vrrp.EffectivePriority).
	Tracks []Track
	// AnnounceBurst rounds of announcements, AnnounceSpacing apart, are
	// sent on becoming master and on re-asserting against a second master
	// (defaults 3 and 20ms). Spacing them lets the later rounds override
	// the single round a losing master may have sent at the same moment.
	AnnounceBurst   int
	AnnounceSpacing time.Duration
	// AnnounceRepeat is the delay after which the burst is repeated, for
	// peers that missed the first (default 500ms; negative disables).
	AnnounceRepeat time.Duration
	// WriteTimeout bounds one advert write (default: the advert interval).
	WriteTimeout time.Duration
	// ShutdownTimeout bounds the priority-0 advert and the release on
	// shutdown (default 2s).
	ShutdownTimeout time.Duration
	// ReleaseDelay is how long a master that shuts down keeps the
	// addresses after its priority-0 advert, or that yields to a better
	// master after its advert: until the new master has announced itself,
	// clients still send to this host, a SYN that finds the address gone
	// waits out TCP's 1s retransmission, and a reply to a request already
	// in flight is lost. (The new master's repeated announcement, 500ms
	// later by default, wins over any ARP answer of this host meanwhile.)
	// Default
	// 3 × the advert interval (a backup takes over after its skew time,
	// well within), at most half of ShutdownTimeout; negative releases at
	// once.
	ReleaseDelay time.Duration
	// TakeoverHold is how long a backup that takes over after a
	// priority-0 advert waits before it adds the addresses and announces
	// them (its own advert leaves at once). The backups' Skew_Times differ
	// by (difference in priority) × interval / 256, 0.4ms for adjacent
	// priorities: when the best backup is scheduled a few milliseconds
	// late, the next one takes over too, announces the VIP, and yields
	// when it hears the better one, which announces again. Clients move
	// twice, and each move resets the connection in flight. Holding the
	// take lets the worse backup hear the better one's advert and yield
	// without ever announcing; it costs clients nothing, since the leaving
	// master keeps the addresses for its ReleaseDelay. Default a quarter
	// of the advert interval, at most half the ReleaseDelay; negative:
	// none.
	TakeoverHold time.Duration
	// AddressLifetime is the lifetime the addresses get at each take and
	// renewal (whole seconds, default DefaultAddressLifetime). A master
	// renews them every RenewInterval(AddressLifetime), from the state
	// machine's goroutine and only while its adverts go out: a node whose
	// speaker is killed, hangs or cannot advertise loses them within about
	// AddressLifetime + RenewInterval, instead of answering for the VIP
	// next to the new master until someone removes them.
	AddressLifetime time.Duration
	Logger          *slog.Logger
	Metrics         Metrics
}

// DefaultAddressLifetime is Config.AddressLifetime's default: the
// shortest the kernel keeps (it counts whole seconds), so that a killed
// master's copy is gone in about 1.25s, plus the up to 250ms by which the
// kernel's once-a-second check rounds.
const DefaultAddressLifetime = time.Second

// RenewInterval is how often a master renews addresses of the given
// lifetime: four times per lifetime, so a renewal delayed by up to three
// quarters of a lifetime (a loaded CPU, a slow netlink call, a GC pause)
// still lands before the address expires, while a dead holder's copy
// outlives its last renewal by the lifetime alone.
func RenewInterval(lifetime time.Duration) time.Duration { return lifetime / 4 }

// renewDue says whether a master renews its addresses now: only while its
// adverts go out. sinceAdvert is the time since the last advert was
// written (negative: none yet). Once adverts have stopped for
// Master_Down_Interval's three intervals, the backups take over, and so
// must the addresses' expiry.
func renewDue(st vrrp.State, sinceAdvert, advertInterval time.Duration) bool {
	return st == vrrp.Master && sinceAdvert >= 0 && sinceAdvert <= 3*advertInterval
}

func (c *Config) validate() error {
	if c.AnnounceBurst <= 0 {
		c.AnnounceBurst = 3
	}
	if c.AnnounceSpacing <= 0 {
		c.AnnounceSpacing = 20 * time.Millisecond
	}
	if c.AnnounceRepeat == 0 {
		c.AnnounceRepeat = 500 * time.Millisecond
	}
	if c.VRRP.AdvertInterval == 0 {
		// vrrp.New's default, set here so the timeouts below and Status
		// follow it.
		c.VRRP.AdvertInterval = vrrp.DefaultAdvertInterval(c.VRRP.Version)
	}
	iv := c.VRRP.AdvertInterval
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = iv
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 2 * time.Second
	}
	if c.ReleaseDelay == 0 {
		c.ReleaseDelay = 3 * iv
	}
	c.ReleaseDelay = min(c.ReleaseDelay, c.ShutdownTimeout/2)
	if c.TakeoverHold == 0 {
		c.TakeoverHold = min(iv/4, c.ReleaseDelay/2)
	}
	if c.AddressLifetime == 0 {
		c.AddressLifetime = DefaultAddressLifetime
	}
	if c.AddressLifetime < time.Second || c.AddressLifetime%time.Second != 0 {
		return fmt.Errorf("speaker: address lifetime %v: want whole seconds, at least 1s (the kernel counts address lifetimes in seconds)", c.AddressLifetime)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	for i, t := range c.Tracks {
		if t.Check == nil {
			return fmt.Errorf("speaker: track %q has no check", t.Name)
		}
		if t.Interval <= 0 {
			c.Tracks[i].Interval = time.Second
		}
	}
	for _, p := range c.Peers {
		if p.Is4() != c.VRRP.Primary.Is4() {
			return fmt.Errorf("speaker: peer %v and primary %v are of different families", p, c.VRRP.Primary)
		}
	}
	return nil
}

// Status is a snapshot of the speaker.
type Status struct {
	State    vrrp.State `json:"state"`
	Priority uint8      `json:"priority"`
	// Since is when State was entered.
	Since time.Time `json:"since"`
	// Master is the last master heard from (or this node's primary when
	// it is master).
	Master netip.Addr `json:"master,omitzero"`
	// AdvertInterval and Preempt are the running configuration (they
	// change with Reconfigure).
	AdvertInterval string `json:"advertInterval"`
	Preempt        bool   `json:"preempt"`
	// AddressRenewed is when the addresses were last added or renewed
	// (zero if never); a master renews them every RenewInterval.
	AddressRenewed time.Time `json:"addressRenewed,omitzero"`
}

// Speaker runs one virtual router.
type Speaker struct {
	cfg   Config
	m     *vrrp.Machine
	conn  Conn
	addrs Addrs
	log   *slog.Logger
	dsts  []netip.Addr

	// reconf carries Reconfigure's requests into Run's loop, the only
	// goroutine that touches the machine and cfg.VRRP.
	reconf chan reconfReq

	// lastAdvert is when an advert was last written (Unix ns; 0: never),
	// set by the send goroutine and read by the loop before a renewal.
	lastAdvert atomic.Int64
	// sent is poked (never blocking) each time an advert is written, so a
	// held-back announcement goes out with the first advert that does.
	sent chan struct{}
	// renewed is when the addresses were last taken or renewed (Unix ns),
	// held whether they are on the link; both are set by the address
	// goroutine.
	renewed atomic.Int64
	held    atomic.Bool
	// renewQueued is set while a renewal waits in the address queue.
	renewQueued atomic.Bool

	// mu protects status, read by Status from any goroutine.
	mu     sync.Mutex
	status Status
}

// New builds a speaker. It takes ownership of conn (closed when Run
// returns) but not of addrs.
func New(cfg Config, conn Conn, addrs Addrs) (*Speaker, error) {
	cfg.Tracks = append([]Track(nil), cfg.Tracks...)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := vrrp.New(cfg.VRRP)
	if err != nil {
		return nil, err
	}
	return &Speaker{cfg: cfg, m: m, conn: conn, addrs: addrs, log: cfg.Logger, dsts: destinations(cfg),
		reconf: make(chan reconfReq), sent: make(chan struct{}, 1),
		status: Status{State: vrrp.Initialize, Priority: m.Priority(), AdvertInterval: cfg.VRRP.AdvertInterval.String(), Preempt: cfg.VRRP.Preempt}}, nil
}

// Status returns the current state.
func (s *Speaker) Status() Status {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	if n := s.renewed.Load(); n != 0 {
		st.AddressRenewed = time.Unix(0, n)
	}
	return st
}

type rxPacket struct {
	at       time.Time
	b        []byte
	src, dst netip.Addr
	ttl      int
}

type checkResult struct {
	i  int
	ok bool
}

// addrOp is work for the address goroutine.
type addrOp struct {
	kind vrrp.ActionKind
	gen  uint64    // announce repeats only while gen is current
	at   time.Time // when the state machine asked for it
	// failover marks the take and first announcement of a Backup→Master
	// transition, which are timed as failover steps.
	failover bool
	// after delays a release (ReleaseDelay on yielding) or a take
	// (TakeoverHold after a priority-0 advert); a newer take or release
	// queued meanwhile cancels it.
	after time.Time
	// lifetime is the addresses' lifetime for a take or renewal, and
	// what a delayed release keeps renewing them with while it waits.
	lifetime time.Duration
	// renew marks a TakeAddrs that refreshes addresses already taken (of
	// generation gen); it never adds them anew.
	renew bool
}

// FailoverObserver is implemented by Metrics that time the steps of a
// takeover: "detect" (the silence of the old master before this node took
// over), "take" (decision to address added) and "announce" (decision to
// first announcement sent).
type FailoverObserver interface {
	FailoverStep(step string, d time.Duration)
}

func (s *Speaker) observe(step string, d time.Duration) {
	if o, ok := s.cfg.Metrics.(FailoverObserver); ok {
		o.FailoverStep(step, d)
	}
}

// Run runs the speaker until ctx is cancelled, then shuts down: a master
// sends a priority-0 advert and releases the addresses. It returns nil
// after a clean shutdown, or the error that stopped it.
func (s *Speaker) Run(ctx context.Context) error {
	defer s.conn.Close()
	// Start from a clean link: a copy of the VIP left by a crashed run
	// (or configured by hand) would answer for an address this node does
	// not hold.
	if err := s.addrs.Release(); err != nil {
		return fmt.Errorf("speaker: remove stale addresses: %w", err)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()

	// Received packets: the reader never blocks on the loop; when the
	// loop is behind, packets are dropped and counted.
	rx := make(chan rxPacket, 64)
	readErr := make(chan error, 1)
	wg.Go(func() { readErr <- s.readLoop(rx) })

	// Outgoing adverts: a small queue drained by its own goroutine.
	tx := make(chan advert, 4)
	sendDone := make(chan struct{})
	wg.Go(func() { defer close(sendDone); s.sendLoop(tx) })

	// Address operations, in order, off the loop.
	ops := newOpQueue()
	var gen genCounter
	addrDone := make(chan struct{})
	go func() { defer close(addrDone); s.addrLoop(ops, &gen) }()

	checks := make(chan checkResult, len(s.cfg.Tracks))
	for i, t := range s.cfg.Tracks {
		wg.Go(func() { s.checkLoop(workCtx, i, t, checks) })
	}
	cstate := make([]vrrp.CheckState, len(s.cfg.Tracks))

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// Renewals come from this goroutine, the one that runs the state
	// machine: if it hangs, the addresses expire, whatever the other
	// goroutines do.
	renew := time.NewTicker(RenewInterval(s.cfg.AddressLifetime))
	defer renew.Stop()

	var lastRx time.Time   // last well-formed advert from another router
	var lastStop time.Time // last priority-0 advert from another router
	// pendingAnnounce is a re-assert's announcement held back while this
	// master's adverts were not going out (a link just back up, say): it
	// is made at the first renewal once they go out again, not dropped.
	pendingAnnounce := false
	apply := func(o vrrp.Output) {
		now := time.Now()
		takeover := o.Changed && o.State == vrrp.Master && s.statusState() == vrrp.Backup
		if takeover && !lastRx.IsZero() {
			s.observe("detect", now.Sub(lastRx))
		}
		took := false // a take precedes this output's announcement
		for _, a := range o.Actions {
			switch a.Kind {
			case vrrp.SendAdvert:
				s.enqueueAdvert(tx, a.Priority)
			case vrrp.TakeAddrs:
				took = true
				op := addrOp{kind: a.Kind, gen: gen.next(), at: now, failover: takeover, lifetime: s.cfg.AddressLifetime}
				if takeover && s.cfg.TakeoverHold > 0 && !lastStop.IsZero() && now.Sub(lastStop) < s.cfg.VRRP.AdvertInterval {
					// The old master still answers for the VIP: let a
					// better backup, if any, be heard first.
					op.after = now.Add(s.cfg.TakeoverHold)
				}
				ops.push(op)
			case vrrp.ReleaseAddrs:
				op := addrOp{kind: a.Kind, gen: gen.next(), at: now, lifetime: s.cfg.AddressLifetime}
				if o.Changed && o.State == vrrp.Backup && s.cfg.ReleaseDelay > 0 {
					// Yielding to a better master: keep answering for the
					// VIP while it announces itself, as on shutdown.
					op.after = now.Add(s.cfg.ReleaseDelay)
				}
				ops.push(op)
			case vrrp.Announce:
				if !took {
					// A re-assert against a second master, with no take:
					// the addresses are there only if they were renewed.
					// A master whose adverts do not go out stopped renewing
					// them; announcing would pull the clients to a node
					// that no longer answers. Otherwise renew first, in
					// case a stall let them expire.
					if !renewDue(s.m.State(), s.sinceAdvert(now), s.cfg.VRRP.AdvertInterval) {
						if !pendingAnnounce {
							s.log.Warn("re-announcing the VIP once this master's adverts go out again")
						}
						pendingAnnounce = true
						continue
					}
					s.pushRenew(ops, gen.load(), now)
				}
				pendingAnnounce = false
				ops.push(addrOp{kind: a.Kind, gen: gen.load(), at: now, failover: takeover})
			}
		}
		if o.State != vrrp.Master {
			pendingAnnounce = false
		}
		if o.Drop != nil {
			s.cfg.Metrics.AdvertDropped(DropReason(o.Drop))
			s.log.Debug("advert dropped", "reason", o.Drop)
		}
		if o.Changed {
			s.cfg.Metrics.Transition(s.statusState(), o.State)
			s.log.Info("vrrp state", "state", o.State, "priority", s.m.Priority(), "reason", o.Reason)
			s.setStatus(func(st *Status) {
				st.State, st.Since = o.State, time.Now()
				if o.State == vrrp.Master {
					st.Master = s.cfg.VRRP.Primary
				}
			})
		} else if o.Reason != "" {
			s.log.Info("vrrp", "state", o.State, "event", o.Reason)
		}
		if !o.Deadline.IsZero() {
			timer.Reset(time.Until(o.Deadline))
		}
	}

	// announcePending makes a held-back announcement, after the renewal
	// its caller queued.
	announcePending := func(now time.Time) {
		if pendingAnnounce {
			pendingAnnounce = false
			s.log.Info("adverts go out again: re-announcing the VIP")
			ops.push(addrOp{kind: vrrp.Announce, gen: gen.load(), at: now})
		}
	}

	s.cfg.Metrics.Priority(s.m.Priority())
	apply(s.m.Start(time.Now()))
	for {
		select {
		case <-ctx.Done():
			return s.shutdown(tx, sendDone, ops, addrDone, &gen, stopWork)
		case err := <-readErr:
			s.shutdown(tx, sendDone, ops, addrDone, &gen, stopWork)
			return fmt.Errorf("speaker: read adverts: %w", err)
		case now := <-timer.C:
			apply(s.m.Tick(now))
		case now := <-renew.C:
			if renewDue(s.m.State(), s.sinceAdvert(now), s.cfg.VRRP.AdvertInterval) {
				s.pushRenew(ops, gen.load(), now)
				announcePending(now)
			}
		case <-s.sent:
			if now := time.Now(); pendingAnnounce && renewDue(s.m.State(), s.sinceAdvert(now), s.cfg.VRRP.AdvertInterval) {
				s.pushRenew(ops, gen.load(), now)
				announcePending(now)
			}
		case p := <-rx:
			pkt, err := vrrp.Decode(p.b, p.src, p.dst)
			if err != nil {
				s.cfg.Metrics.AdvertDropped(DropReason(err))
				s.log.Debug("malformed advert dropped", "src", p.src, "err", err)
				continue
			}
			if len(s.cfg.Peers) > 0 && !slices.Contains(s.cfg.Peers, p.src) {
				// Unicast mode names the routers of this link: an advert
				// from anyone else (a stray router, a spoofer) must not
				// make this node yield or preempt.
				s.cfg.Metrics.AdvertDropped(DropUnknownPeer)
				s.log.Debug("advert from an unknown peer dropped", "src", p.src)
				continue
			}
			s.cfg.Metrics.AdvertReceived()
			if p.src != s.cfg.VRRP.Primary {
				lastRx = p.at
				if pkt.Priority == vrrp.PriorityStop {
					lastStop = p.at
				}
			}
			o := s.m.Receive(p.at, p.src, p.ttl, pkt)
			// A backup follows the sender when it accepted it as master
			// (§6.4.2): not a leaving master, and not one it preempts.
			follows := pkt.Priority != vrrp.PriorityStop && (pkt.Priority >= s.m.Priority() || !s.cfg.VRRP.Preempt)
			if o.Drop == nil && p.src != s.cfg.VRRP.Primary && follows && o.State == vrrp.Backup {
				s.setStatus(func(st *Status) { st.Master = p.src })
			}
			apply(o)
		case req := <-s.reconf:
			was := s.cfg.AddressLifetime
			err := s.applyReconfigure(req.cfg, cstate, apply)
			if err == nil && s.cfg.AddressLifetime != was {
				renew.Reset(RenewInterval(s.cfg.AddressLifetime))
				if s.m.State() == vrrp.Master {
					// The new lifetime at once, not at the next tick.
					s.pushRenew(ops, gen.load(), time.Now())
				}
			}
			req.done <- err
		case r := <-checks:
			h := vrrp.Hysteresis{Fall: s.cfg.Tracks[r.i].Fall, Rise: s.cfg.Tracks[r.i].Rise}
			next := h.Observe(cstate[r.i], r.ok)
			if next.Down != cstate[r.i].Down {
				s.log.Info("tracked check", "name", s.cfg.Tracks[r.i].Name, "down", next.Down)
			}
			cstate[r.i] = next
			prio := s.effective(s.cfg.VRRP.Priority, cstate)
			if prio != s.m.Priority() {
				o, err := s.m.SetPriority(time.Now(), prio)
				if err != nil {
					s.log.Warn("priority change refused", "priority", prio, "err", err)
					continue
				}
				s.log.Info("priority changed", "priority", prio)
				s.cfg.Metrics.Priority(prio)
				s.setStatus(func(st *Status) { st.Priority = prio })
				apply(o)
			}
		}
	}
}

// shutdown sends the priority-0 advert (if master) and releases the
// addresses, each bounded by ShutdownTimeout, then stops the workers.
// sendDone is closed when the send goroutine has exited.
func (s *Speaker) shutdown(tx chan advert, sendDone <-chan struct{}, ops *opQueue, addrDone chan struct{}, gen *genCounter, stopWork func()) error {
	from := s.m.State()
	o := s.m.Shutdown(time.Now())
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	var errs []error
	// The priority-0 advert must be the last one out: a backup that hears
	// a normal advert after it restarts its timer at Master_Down_Interval
	// instead of Skew_Time (RFC 5798 §6.4.2). The adverts still queued are
	// superseded by it, so they are dropped; the one being written is
	// waited for.
	for drained := false; !drained; {
		select {
		case <-tx:
		default:
			drained = true
		}
	}
	close(tx)
	select {
	case <-sendDone:
	case <-time.After(time.Until(deadline)):
		s.log.Warn("advert write still running at shutdown")
	}
	for _, a := range o.Actions {
		if a.Kind == vrrp.SendAdvert {
			// Written here, synchronously, so it leaves before the address
			// goes and before the process exits.
			pkt := s.m.Advert(a.Priority)
			for _, dst := range s.dsts {
				if err := s.write(pkt, s.cfg.VRRP.Primary, dst, deadline); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	stopWork()
	// No announcement may follow: bump the generation, let the address
	// goroutine finish what is queued, then release.
	gen.next()
	ops.close()
	addrIdle := true
	select {
	case <-addrDone:
	case <-time.After(time.Until(deadline)):
		addrIdle = false
		s.log.Warn("address operations still running at shutdown; releasing anyway")
	}
	if from == vrrp.Master && s.cfg.ReleaseDelay > 0 {
		// Keep answering for the VIP while the backups take over, renewing
		// it if it is held (and the address goroutine, which renews
		// otherwise, is done) so it does not expire first.
		until := time.Now().Add(min(s.cfg.ReleaseDelay, time.Until(deadline)))
		if addrIdle && s.held.Load() {
			s.hold(until, s.cfg.AddressLifetime)
		} else {
			time.Sleep(time.Until(until))
		}
	}
	// Release whatever the state: a Take may have been queued just before.
	if err := s.addrs.Release(); err != nil {
		errs = append(errs, fmt.Errorf("speaker: release addresses: %w", err))
	} else {
		s.held.Store(false)
	}
	if from != vrrp.Initialize {
		s.cfg.Metrics.Transition(from, vrrp.Initialize)
	}
	s.setStatus(func(st *Status) { st.State, st.Since = vrrp.Initialize, time.Now() })
	s.log.Info("vrrp stopped", "was", from, "priority0_sent", from == vrrp.Master)
	s.conn.Close()
	return errors.Join(errs...)
}

func (s *Speaker) statusState() vrrp.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status.State
}

func (s *Speaker) setStatus(f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.status)
	s.status.Priority = s.m.Priority()
}

// enqueueAdvert hands an advert to the send goroutine. If the queue is
// full the link is stuck; the oldest advert is stale anyway, so it is
// replaced rather than blocking the loop.
func (s *Speaker) enqueueAdvert(tx chan advert, prio uint8) {
	// The packet is built here, on the loop, from the configuration of
	// the moment: a reconfiguration cannot race the send goroutine.
	b := advert{pkt: s.m.Advert(prio), src: s.cfg.VRRP.Primary, dsts: s.dsts, timeout: s.cfg.WriteTimeout}
	for {
		select {
		case tx <- b:
			return
		default:
		}
		select {
		case <-tx:
			s.cfg.Metrics.SendFailed()
		default:
		}
	}
}

// advert is one advertisement for the send goroutine.
type advert struct {
	pkt     *vrrp.Packet
	dsts    []netip.Addr
	timeout time.Duration
	// src is the primary address the checksum covers, read on the loop
	// (a reconfiguration replaces cfg.VRRP there).
	src netip.Addr
}

func (s *Speaker) sendLoop(tx chan advert) {
	for b := range tx {
		deadline := time.Now().Add(b.timeout)
		for _, dst := range b.dsts {
			if err := s.write(b.pkt, b.src, dst, deadline); err != nil {
				s.log.Warn("send advert", "dst", dst, "err", err)
			}
		}
	}
}

func (s *Speaker) write(pkt *vrrp.Packet, src, dst netip.Addr, deadline time.Time) error {
	b, err := pkt.Marshal(src, dst)
	if err != nil {
		return err // validated at New; cannot happen
	}
	if err := s.conn.WriteTo(b, dst, deadline); err != nil {
		s.cfg.Metrics.SendFailed()
		return fmt.Errorf("speaker: send advert to %v: %w", dst, err)
	}
	s.lastAdvert.Store(time.Now().UnixNano())
	select {
	case s.sent <- struct{}{}:
	default:
	}
	s.cfg.Metrics.AdvertSent()
	return nil
}

func (s *Speaker) readLoop(rx chan<- rxPacket) error {
	buf := make([]byte, 1500)
	for {
		n, src, dst, ttl, err := s.conn.ReadFrom(buf)
		if err != nil {
			return err
		}
		p := rxPacket{at: time.Now(), b: append([]byte(nil), buf[:n]...), src: src, dst: dst, ttl: ttl}
		select {
		case rx <- p:
		default:
			s.cfg.Metrics.AdvertDropped("queue_full")
		}
	}
}

// genCounter numbers take/release operations so a scheduled announcement
// repeat is skipped once the addresses were released (or re-taken).
type genCounter struct {
	mu sync.Mutex // protects n
	n  uint64
}

func (g *genCounter) next() uint64 { g.mu.Lock(); defer g.mu.Unlock(); g.n++; return g.n }
func (g *genCounter) load() uint64 { g.mu.Lock(); defer g.mu.Unlock(); return g.n }

// opQueue hands address operations to the address goroutine without ever
// blocking the loop: a slow netlink call only lengthens the queue.
type opQueue struct {
	ready chan struct{} // capacity 1: signalled when q grows or closes

	mu     sync.Mutex // protects q and closed
	q      []addrOp
	closed bool
}

func newOpQueue() *opQueue { return &opQueue{ready: make(chan struct{}, 1)} }

func (o *opQueue) signal() {
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

func (o *opQueue) push(op addrOp) {
	o.mu.Lock()
	o.q = append(o.q, op)
	o.mu.Unlock()
	o.signal()
}

func (o *opQueue) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.signal()
}

// pop returns the next operation; done is true once the queue is closed
// and drained.
func (o *opQueue) pop() (op addrOp, ok, done bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.q) == 0 {
		return addrOp{}, false, o.closed
	}
	op, o.q = o.q[0], o.q[1:]
	return op, true, false
}

// announcer schedules the rounds of announcements of one burst and its
// repeat; owned by the address goroutine, with what it holds.
type announcer struct {
	timer  *time.Timer
	rounds []time.Time // pending rounds, in order
	gen    uint64      // generation the rounds belong to
	// held is the generation of the take that put the addresses on the
	// link (0: released); only those are renewed.
	held uint64
}

// pushRenew queues a renewal of the addresses of generation g, unless one
// is queued already: when netlink is slow, renewals must not pile up
// behind it (one renewal is as good as several).
func (s *Speaker) pushRenew(ops *opQueue, g uint64, now time.Time) {
	if s.renewQueued.CompareAndSwap(false, true) {
		ops.push(addrOp{kind: vrrp.TakeAddrs, renew: true, gen: g, at: now, lifetime: s.cfg.AddressLifetime})
	}
}

// sinceAdvert is the time from the last advert written to now (-1: none).
func (s *Speaker) sinceAdvert(now time.Time) time.Duration {
	if n := s.lastAdvert.Load(); n != 0 {
		return now.Sub(time.Unix(0, n))
	}
	return -1
}

// take adds or renews the addresses and records when.
func (s *Speaker) take(lifetime time.Duration) error {
	if err := s.addrs.Take(lifetime); err != nil {
		return err
	}
	s.renewed.Store(time.Now().UnixNano())
	s.held.Store(true)
	return nil
}

// hold waits until until, renewing the held addresses every renew
// interval so they outlast the wait. It serves the delayed releases: a
// leaving or yielding master that keeps answering for the VIP while the
// new master announces itself.
func (s *Speaker) hold(until time.Time, lifetime time.Duration) {
	for {
		d := time.Until(until)
		if d <= 0 {
			return
		}
		if err := s.take(lifetime); err != nil {
			s.log.Error("address renewal failed", "err", err)
		}
		time.Sleep(min(d, RenewInterval(lifetime)))
	}
}

func (a *announcer) schedule() {
	a.timer.Stop()
	if len(a.rounds) > 0 {
		a.timer.Reset(time.Until(a.rounds[0]))
	}
}

// addrLoop carries out address operations in order, and the rounds of
// announcements: a burst on Announce, repeated AnnounceRepeat later, all
// cancelled by a release (or a newer take). It returns when ops is closed
// and drained.
func (s *Speaker) addrLoop(ops *opQueue, gen *genCounter) {
	an := &announcer{timer: time.NewTimer(time.Hour)}
	an.timer.Stop()
	defer an.timer.Stop()
	for {
		select {
		case <-ops.ready:
			for {
				op, ok, done := ops.pop()
				if done {
					return
				}
				if !ok {
					break
				}
				if err := s.doOp(op, gen, an); err != nil {
					s.log.Error("address operation failed", "op", op.kind, "err", err)
				}
			}
		case <-an.timer.C:
			if len(an.rounds) == 0 {
				continue
			}
			an.rounds = an.rounds[1:]
			an.schedule()
			if an.gen != gen.load() {
				an.rounds = nil
				continue
			}
			if err := s.addrs.Announce(); err != nil {
				s.log.Error("announcement failed", "err", err)
			}
		}
	}
}

func (s *Speaker) doOp(op addrOp, gen *genCounter, an *announcer) error {
	switch op.kind {
	case vrrp.TakeAddrs:
		if op.renew {
			s.renewQueued.Store(false)
			if op.gen != gen.load() || op.gen != an.held {
				return nil // released or re-taken since, or not taken yet
			}
			return s.take(op.lifetime)
		}
		if d := time.Until(op.after); d > 0 {
			time.Sleep(d)
			if op.gen != gen.load() {
				return nil // yielded or released meanwhile: never taken
			}
		}
		err := s.take(op.lifetime)
		if err == nil {
			an.held = op.gen
			if op.failover {
				s.observe("take", time.Since(op.at))
			}
		}
		return err
	case vrrp.ReleaseAddrs:
		an.rounds = nil
		an.schedule()
		if time.Until(op.after) > 0 {
			// Still answering for the addresses meanwhile: they must not
			// expire before the release.
			if an.held != 0 {
				s.hold(op.after, op.lifetime)
			} else {
				time.Sleep(time.Until(op.after))
			}
			if op.gen != gen.load() {
				return nil // taken again meanwhile: the addresses stay
			}
		}
		an.held = 0
		s.held.Store(false)
		return s.addrs.Release()
	case vrrp.Announce:
		if op.gen != gen.load() {
			return nil // released or re-taken since
		}
		now := time.Now()
		an.rounds, an.gen = an.rounds[:0], op.gen
		for _, base := range []time.Duration{0, s.cfg.AnnounceRepeat} {
			if base < 0 {
				continue
			}
			for i := range s.cfg.AnnounceBurst {
				if base > 0 || i > 0 {
					an.rounds = append(an.rounds, now.Add(base+time.Duration(i)*s.cfg.AnnounceSpacing))
				}
			}
		}
		an.schedule()
		err := s.addrs.Announce()
		if err == nil {
			// Once per burst (the later rounds are not logged): when the
			// clients were told, which is what a takeover or a re-assert
			// against a second master is for.
			s.log.Info("vip announced", "rounds", len(an.rounds)+1, "after", time.Since(op.at))
			if op.failover {
				s.observe("announce", time.Since(op.at))
			}
		}
		return err
	}
	return nil
}

func (s *Speaker) checkLoop(ctx context.Context, i int, t Track, out chan<- checkResult) {
	tick := time.NewTicker(t.Interval)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, t.Interval)
		err := t.Check.Check(cctx)
		cancel()
		select {
		case out <- checkResult{i: i, ok: err == nil}:
		case <-ctx.Done():
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// DropUnknownPeer is the drop reason of an advert whose source is not one
// of the configured unicast peers.
const DropUnknownPeer = "unknown_peer"

// DropReason names the reason a packet was dropped, for metrics labels.
func DropReason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{vrrp.ErrTTL, "ttl"}, {vrrp.ErrVRID, "vrid"}, {vrrp.ErrAuth, "auth"}, {vrrp.ErrVersion, "version"},
		{vrrp.ErrChecksum, "checksum"}, {vrrp.ErrShort, "short"}, {vrrp.ErrCount, "count"}, {vrrp.ErrType, "type"},
		{vrrp.ErrInterval, "interval"}, {vrrp.ErrIntervalMismatch, "interval_mismatch"}, {vrrp.ErrFamily, "family"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}

type nopMetrics struct{}

func (nopMetrics) AdvertSent()                {}
func (nopMetrics) AdvertReceived()            {}
func (nopMetrics) AdvertDropped(string)       {}
func (nopMetrics) SendFailed()                {}
func (nopMetrics) Transition(_, _ vrrp.State) {}
func (nopMetrics) Priority(uint8)             {}
