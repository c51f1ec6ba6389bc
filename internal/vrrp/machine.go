package vrrp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// State is a virtual router's state (RFC 5798 §6.4).
type State int

// The three states of RFC 5798 §6.4; Initialize is also the state after
// Shutdown.
const (
	Initialize State = iota
	Backup
	Master
)

func (s State) String() string {
	switch s {
	case Initialize:
		return "initialize"
	case Backup:
		return "backup"
	case Master:
		return "master"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// MarshalText lets State appear as its name in JSON and logs.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Priorities with a protocol meaning (RFC 5798 §5.2.4).
const (
	PriorityStop  = 0   // the master is leaving: backups take over after Skew_Time
	PriorityOwner = 255 // the router owns the addresses and never yields them
)

// Config is one virtual router's static configuration.
type Config struct {
	// Version is 2 or 3 (default 3).
	Version int
	// VRID is the virtual router ID, 1..255.
	VRID uint8
	// Priority is the base priority: 1..254, or 255 for the address owner.
	Priority uint8
	// AdvertInterval is the advertisement interval: whole seconds in
	// version 2, whole centiseconds in version 3. The default is the
	// cluster file's (config.DefaultAdvertInterval and
	// DefaultVRRPVersion2Advert): 100ms in version 3, for sub-second
	// failover, and 1s in version 2, the smallest it can carry. (The RFCs
	// default to 1s, RFC 5798 §5.2.7 and RFC 3768 §5.3.7; a library default
	// that differed from the product's would only surprise.)
	AdvertInterval time.Duration
	// Preempt lets a higher-priority backup take over from a lower-priority
	// master (RFC 5798 §6.1 Preempt_Mode, default true there; the zero
	// value here is false so callers state it).
	Preempt bool
	// PreemptDelay keeps a backup from preempting for this long after
	// Start, so a rebooted node first hears the current master
	// (keepalived's preempt_delay).
	PreemptDelay time.Duration
	// Primary is this router's primary address on the link: the source
	// of its adverts, and the tie-breaker between equal priorities.
	Primary netip.Addr
	// Addrs are the virtual addresses.
	Addrs []netip.Addr
	// AuthType and AuthData are sent and required in VRRPv2 (AuthSimple
	// with a Password, as keepalived's auth_type PASS).
	AuthType uint8
	AuthData [authDataLen]byte
}

// DefaultAdvertInterval is the interval a Config of version gets when it
// sets none (see Config.AdvertInterval).
func DefaultAdvertInterval(version int) time.Duration {
	if version == 2 {
		return time.Second
	}
	return 100 * time.Millisecond
}

func (c *Config) validate() error {
	if c.Version == 0 {
		c.Version = 3
	}
	if c.AdvertInterval == 0 {
		c.AdvertInterval = DefaultAdvertInterval(c.Version)
	}
	var errs []error
	if c.Version != 2 && c.Version != 3 {
		errs = append(errs, fmt.Errorf("version %d: want 2 or 3", c.Version))
	}
	if c.VRID == 0 {
		errs = append(errs, errors.New("vrid 0: want 1..255"))
	}
	if c.Priority == 0 {
		errs = append(errs, errors.New("priority 0 is reserved for a leaving master: want 1..255"))
	}
	if !c.Primary.IsValid() {
		errs = append(errs, errors.New("primary address is not set"))
	}
	if len(c.Addrs) == 0 {
		errs = append(errs, errors.New("no virtual addresses"))
	}
	for _, a := range c.Addrs {
		if a.Is4() != c.Primary.Is4() {
			errs = append(errs, fmt.Errorf("virtual address %v and primary %v are of different families", a, c.Primary))
		}
	}
	if c.PreemptDelay < 0 {
		errs = append(errs, fmt.Errorf("preempt delay %v is negative", c.PreemptDelay))
	}
	// Let the codec judge the interval and families: it is the authority
	// on what fits on the wire.
	if len(errs) == 0 {
		p := c.advert(c.Priority)
		dst := GroupV4
		if c.Primary.Is6() {
			dst = GroupV6
		}
		if _, err := p.Marshal(c.Primary, dst); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vrrp: config: %w", err)
	}
	return nil
}

// advert builds the advertisement this router sends with priority prio.
func (c *Config) advert(prio uint8) *Packet {
	p := &Packet{Version: c.Version, VRID: c.VRID, Priority: prio, AdvertInterval: c.AdvertInterval, Addrs: c.Addrs}
	if c.Version == 2 {
		p.AuthType, p.AuthData = c.AuthType, c.AuthData
	}
	return p
}

// ActionKind is what the caller must do.
type ActionKind int

// Actions, in the order the caller must carry them out within one Output.
const (
	// SendAdvert: send an advertisement with Action.Priority.
	SendAdvert ActionKind = iota + 1
	// TakeAddrs: add the virtual addresses to the link.
	TakeAddrs
	// ReleaseAddrs: remove the virtual addresses from the link.
	ReleaseAddrs
	// Announce: send gratuitous ARPs / unsolicited neighbour
	// advertisements for the virtual addresses (a burst, repeated shortly
	// after: the caller owns the repetition).
	Announce
)

func (k ActionKind) String() string {
	switch k {
	case SendAdvert:
		return "send-advert"
	case TakeAddrs:
		return "take"
	case ReleaseAddrs:
		return "release"
	case Announce:
		return "announce"
	}
	return fmt.Sprintf("action(%d)", int(k))
}

// Action is one thing the caller must do.
type Action struct {
	Kind ActionKind
	// Priority is the priority to advertise (SendAdvert only).
	Priority uint8
}

func (a Action) String() string {
	if a.Kind == SendAdvert {
		return fmt.Sprintf("%v(%d)", a.Kind, a.Priority)
	}
	return a.Kind.String()
}

// Output is the result of feeding one event to the Machine.
type Output struct {
	// Actions to carry out, in order.
	Actions []Action
	// State after the event, and whether the event changed it.
	State   State
	Changed bool
	// Deadline is when the caller must call Tick next; zero means no timer
	// is running (Initialize).
	Deadline time.Time
	// Drop, when not nil, says why a received advert was ignored (wraps
	// one of the Err* values); counted by the caller, never fatal.
	Drop error
	// Reason says why the state changed, for logs.
	Reason string
}

// Machine is the state machine of one virtual router (RFC 5798 §6.4). It is
// not safe for concurrent use: one goroutine owns it and feeds it events.
type Machine struct {
	cfg   Config
	state State
	// prio is the current effective priority (the base priority adjusted
	// by tracking); it is what this router advertises and compares.
	prio uint8
	// masterAdverInterval is the interval learnt from the master (VRRPv3,
	// §6.4.2) or the configured one (VRRPv2, which requires them equal).
	masterAdverInterval time.Duration
	// adverTimer (Master) and masterDownTimer (Backup) are deadlines;
	// only the one of the current state is meaningful.
	adverTimer      time.Time
	masterDownTimer time.Time
	// preemptAfter is when PreemptDelay, counted from Start (started),
	// ends.
	started      time.Time
	preemptAfter time.Time
	// lastConflict is when this master last re-asserted itself to a
	// lower-priority master; bounds the re-announcements to one per
	// interval.
	lastConflict time.Time
}

// New returns a machine in Initialize. It fills defaults into a copy of cfg
// and validates it.
func New(cfg Config) (*Machine, error) {
	cfg.Addrs = append([]netip.Addr(nil), cfg.Addrs...)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Machine{cfg: cfg, prio: cfg.Priority, masterAdverInterval: cfg.AdvertInterval}, nil
}

// State returns the current state.
func (m *Machine) State() State { return m.state }

// Priority returns the current effective priority.
func (m *Machine) Priority() uint8 { return m.prio }

// MasterAdverInterval returns the interval currently used to compute
// Master_Down_Interval.
func (m *Machine) MasterAdverInterval() time.Duration { return m.masterAdverInterval }

// Advert returns the advertisement this router sends at priority prio.
func (m *Machine) Advert(prio uint8) *Packet { return m.cfg.advert(prio) }

// SkewTime is Skew_Time (RFC 5798 §6.1): ((256 - Priority) ×
// Master_Adver_Interval) / 256, so the highest-priority backup is the first
// to time out. In VRRPv2 (RFC 3768 §6.1) it is (256 - Priority) / 256
// seconds, which equals the same formula with its 1-second unit.
func (m *Machine) SkewTime() time.Duration {
	iv := m.masterAdverInterval
	if m.cfg.Version == 2 {
		iv = time.Second
	}
	return time.Duration(256-int(m.prio)) * iv / 256
}

// MasterDownInterval is Master_Down_Interval (RFC 5798 §6.1): three
// intervals plus Skew_Time.
func (m *Machine) MasterDownInterval() time.Duration {
	return 3*m.masterAdverInterval + m.SkewTime()
}

func (m *Machine) out(acts []Action, from State, reason string) Output {
	o := Output{Actions: acts, State: m.state, Changed: from != m.state, Reason: reason}
	switch m.state {
	case Master:
		o.Deadline = m.adverTimer
	case Backup:
		o.Deadline = m.masterDownTimer
	}
	return o
}

// Start is the Startup event (RFC 5798 §6.4.1). The owner becomes master at
// once; every other router starts as backup and waits Master_Down_Interval
// for a master.
func (m *Machine) Start(now time.Time) Output {
	from := m.state
	if from != Initialize {
		return m.out(nil, from, "")
	}
	m.started = now
	m.preemptAfter = now.Add(m.cfg.PreemptDelay)
	m.masterAdverInterval = m.cfg.AdvertInterval
	if m.prio == PriorityOwner {
		return m.becomeMaster(now, from, "address owner (priority 255)")
	}
	m.state = Backup
	m.masterDownTimer = now.Add(m.MasterDownInterval())
	return m.out(nil, from, "startup")
}

// becomeMaster is the transition to Master (§6.4.1, §6.4.2): advertise,
// take the addresses, announce them, start the Adver_Timer.
func (m *Machine) becomeMaster(now time.Time, from State, reason string) Output {
	m.state = Master
	m.adverTimer = now.Add(m.cfg.AdvertInterval)
	return m.out([]Action{{Kind: SendAdvert, Priority: m.prio}, {Kind: TakeAddrs}, {Kind: Announce}}, from, reason)
}

// becomeBackup is the Master → Backup transition on a better advert
// (§6.4.3): release the addresses and time the new master.
//
// Beyond the RFC, the yielding master sends one last advert at its own
// priority. When two masters meet (a healed partition, a lost tie) the
// winner may never hear the loser otherwise (the loser yields on the
// winner's first advert), and clients that learnt the loser's MAC would
// keep it until their ARP entries expire. This advert makes the winner
// re-assert and announce at once (see Receive in Master); to every backup
// it is an ordinary lower-priority advert.
func (m *Machine) becomeBackup(now time.Time, p *Packet, reason string) Output {
	from := m.state
	m.state = Backup
	m.learnInterval(p)
	m.masterDownTimer = now.Add(m.MasterDownInterval())
	return m.out([]Action{{Kind: ReleaseAddrs}, {Kind: SendAdvert, Priority: m.prio}}, from, reason)
}

// learnInterval sets Master_Adver_Interval from a VRRPv3 master's advert
// (§6.4.2); VRRPv2 intervals are configured, never learnt.
func (m *Machine) learnInterval(p *Packet) {
	if m.cfg.Version == 3 {
		m.masterAdverInterval = p.AdvertInterval
	}
}

// Tick is the timer event: the caller calls it at (or after) the last
// Output's Deadline. Early calls do nothing.
func (m *Machine) Tick(now time.Time) Output {
	from := m.state
	switch m.state {
	case Backup:
		if now.Before(m.masterDownTimer) {
			return m.out(nil, from, "")
		}
		// §6.4.2: Master_Down_Timer fired.
		return m.becomeMaster(now, from, "master down timer expired")
	case Master:
		if now.Before(m.adverTimer) {
			return m.out(nil, from, "")
		}
		// §6.4.3: Adver_Timer fired. The next deadline counts from the
		// scheduled time, not from a late wake-up, so a loaded caller
		// does not drift; if it fell a whole interval behind, restart.
		m.adverTimer = m.adverTimer.Add(m.cfg.AdvertInterval)
		if !m.adverTimer.After(now) {
			m.adverTimer = now.Add(m.cfg.AdvertInterval)
		}
		return m.out([]Action{{Kind: SendAdvert, Priority: m.prio}}, from, "")
	}
	return m.out(nil, from, "")
}

// Check applies the receive-side validation of RFC 5798 §7.1 and RFC 3768
// §7.1 that needs the router's configuration: TTL, version, VRID,
// authentication, and (VRRPv2) the interval. ttl is the received IP TTL or
// hop limit, or a negative number when the caller already checked it.
func (m *Machine) Check(p *Packet, ttl int) error {
	switch {
	case ttl >= 0 && ttl != TTL:
		return fmt.Errorf("%w: %d", ErrTTL, ttl)
	case p.Version != m.cfg.Version:
		return fmt.Errorf("%w: got %d, configured %d", ErrVersion, p.Version, m.cfg.Version)
	case p.VRID != m.cfg.VRID:
		return fmt.Errorf("%w: got %d, configured %d", ErrVRID, p.VRID, m.cfg.VRID)
	}
	if m.cfg.Version == 2 {
		if p.AuthType != m.cfg.AuthType || (p.AuthType == AuthSimple && p.AuthData != m.cfg.AuthData) {
			return fmt.Errorf("%w: type %d", ErrAuth, p.AuthType)
		}
		if p.AdvertInterval != m.cfg.AdvertInterval {
			return fmt.Errorf("%w: VRRPv2 interval %v, configured %v", ErrIntervalMismatch, p.AdvertInterval, m.cfg.AdvertInterval)
		}
	}
	return nil
}

// ErrIntervalMismatch: a VRRPv2 advert whose interval differs from the
// configured one is discarded (RFC 3768 §7.1).
var ErrIntervalMismatch = errors.New("vrrp: advertisement interval mismatch")

// Receive is the advert-received event (§6.4.2, §6.4.3). src is the IP
// source (the sender's primary address), ttl as for Check. Adverts that
// fail Check change nothing and come back in Output.Drop.
func (m *Machine) Receive(now time.Time, src netip.Addr, ttl int, p *Packet) Output {
	from := m.state
	if err := m.Check(p, ttl); err != nil {
		o := m.out(nil, from, "")
		o.Drop = err
		return o
	}
	if src == m.cfg.Primary {
		// Our own advert looped back (multicast loopback); not a peer.
		return m.out(nil, from, "")
	}
	switch m.state {
	case Backup:
		switch {
		case p.Priority == PriorityStop:
			// §6.4.2: the master left; take over after Skew_Time only.
			m.masterDownTimer = now.Add(m.SkewTime())
		case !m.cfg.Preempt || p.Priority >= m.prio || now.Before(m.preemptAfter):
			// §6.4.2: accept this master. During the preempt delay a
			// lower-priority master is accepted too.
			m.learnInterval(p)
			m.masterDownTimer = now.Add(m.MasterDownInterval())
		default:
			// §6.4.2: preempting: ignore the lower-priority master and
			// let Master_Down_Timer expire.
		}
		return m.out(nil, from, "")
	case Master:
		switch {
		case p.Priority == PriorityStop:
			// §6.4.3: another master leaving; advertise at once so the
			// backups keep this master.
			m.adverTimer = now.Add(m.cfg.AdvertInterval)
			return m.out([]Action{{Kind: SendAdvert, Priority: m.prio}}, from, "")
		case p.Priority > m.prio || (p.Priority == m.prio && addrGreater(src, m.cfg.Primary)):
			// §6.4.3: a better master exists.
			reason := fmt.Sprintf("higher priority master %v (priority %d)", src, p.Priority)
			if p.Priority == m.prio {
				reason = fmt.Sprintf("tie at priority %d lost to higher address %v", p.Priority, src)
			}
			return m.becomeBackup(now, p, reason)
		default:
			// §6.4.3 discards a worse master's advert. Two masters mean a
			// healed partition or a lost tie: the loser steps down on our
			// next advert, so send it now rather than up to an interval
			// later, and announce again so no client keeps the loser's
			// MAC. At most once per interval, whatever the peer sends.
			if !m.lastConflict.IsZero() && now.Sub(m.lastConflict) < m.cfg.AdvertInterval {
				return m.out(nil, from, "")
			}
			m.lastConflict = now
			m.adverTimer = now.Add(m.cfg.AdvertInterval)
			o := m.out([]Action{{Kind: SendAdvert, Priority: m.prio}, {Kind: Announce}}, from, "")
			o.Reason = fmt.Sprintf("second master %v (priority %d) seen: re-asserting", src, p.Priority)
			return o
		}
	}
	return m.out(nil, from, "")
}

// SetPriority is the priority-changed event (tracking). The owner's
// priority is fixed at 255 and 0 is reserved; both are refused. The change
// takes effect in the next adverts; a master whose priority drops sends one
// at once so a preempting backup learns it without waiting an interval.
func (m *Machine) SetPriority(now time.Time, prio uint8) (Output, error) {
	from := m.state
	if m.cfg.Priority == PriorityOwner && prio != PriorityOwner {
		return m.out(nil, from, ""), errors.New("vrrp: the address owner's priority is fixed at 255")
	}
	if prio == PriorityStop {
		return m.out(nil, from, ""), errors.New("vrrp: priority 0 is reserved for shutdown")
	}
	if prio == m.prio {
		return m.out(nil, from, ""), nil
	}
	m.prio = prio
	if m.state == Master {
		m.adverTimer = now.Add(m.cfg.AdvertInterval)
		return m.out([]Action{{Kind: SendAdvert, Priority: m.prio}}, from, ""), nil
	}
	return m.out(nil, from, ""), nil
}

// Shutdown is the Shutdown event (§6.4.2, §6.4.3). A master sends a
// priority-0 advert (so backups take over after Skew_Time instead of
// Master_Down_Interval) and releases the addresses.
func (m *Machine) Shutdown(now time.Time) Output {
	from := m.state
	m.state = Initialize
	if from == Master {
		return m.out([]Action{{Kind: SendAdvert, Priority: PriorityStop}, {Kind: ReleaseAddrs}}, from, "shutdown")
	}
	return m.out(nil, from, "shutdown")
}

// addrGreater compares primary addresses as unsigned integers in network
// byte order (RFC 5798 §6.4.3).
func addrGreater(a, b netip.Addr) bool { return a.Unmap().Compare(b.Unmap()) > 0 }
