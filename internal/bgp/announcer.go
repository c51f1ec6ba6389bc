package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Peer is one router a node opens a session to.
type Peer struct {
	Address netip.Addr
	ASN     uint32
	// Password turns on TCP MD5 signatures; empty is none.
	Password string
	// Port is the router's BGP port (0: 179).
	Port int
	// BFD runs single-hop BFD with the router at BFDInterval x
	// BFDMultiplier: the router drops a dead node's route after about
	// 500ms rather than the hold time.
	BFD bool
}

// BFD timers: 100ms both ways, down after 5 missed packets (500ms). Three
// (300ms) flapped sessions on a loaded 2-CPU lab machine, and each flap
// resets the BGP session and takes the route away for seconds.
const (
	BFDInterval   = 100 * time.Millisecond
	BFDMultiplier = 5
)

// Config is one node's announcer.
type Config struct {
	// VIP is announced as a /32 (IPv4) or /128 (IPv6) host route.
	VIP netip.Addr
	// LocalASN and RouterID identify the node (RouterID is IPv4).
	LocalASN uint32
	RouterID netip.Addr
	Peers    []Peer
	// HoldTime and Keepalive are whole seconds (defaults 3s and 1s): with
	// no BFD, the hold time is how long a router keeps a dead node's route.
	HoldTime  time.Duration
	Keepalive time.Duration
	// Communities are attached to the route (RFC 1997, 32-bit form).
	Communities []uint32
	// WithdrawWait bounds how long Withdraw and Stop wait for the
	// withdrawal to leave for every established peer (default 2s).
	WithdrawWait time.Duration
	// Linger is how long Stop waits after the withdrawal left, with the
	// sessions still up, before it returns (default 500ms; negative: no
	// wait). The route leaving gobgp's Adj-RIB-Out is not yet the routers'
	// forwarding tables without it: a router still sends new connections
	// here until it processed the UPDATE and reprogrammed its FIB, and the
	// load balancer, stopped after Stop returns, must still accept them.
	Linger time.Duration
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.HoldTime == 0 {
		c.HoldTime = 3 * time.Second
	}
	if c.Keepalive == 0 {
		c.Keepalive = time.Second
	}
	if c.WithdrawWait == 0 {
		c.WithdrawWait = 2 * time.Second
	}
	if c.Linger == 0 {
		c.Linger = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	switch {
	case !c.VIP.IsValid():
		return errors.New("bgp: no VIP")
	case c.LocalASN == 0:
		return errors.New("bgp: no local ASN")
	case !c.RouterID.Is4():
		return fmt.Errorf("bgp: router ID %s is not IPv4", c.RouterID)
	case len(c.Peers) == 0:
		return errors.New("bgp: no peers")
	case c.HoldTime < 3*time.Second || c.HoldTime%time.Second != 0:
		return fmt.Errorf("bgp: hold time %s: want whole seconds, at least 3s", c.HoldTime)
	case c.Keepalive < time.Second || c.Keepalive%time.Second != 0 || c.Keepalive >= c.HoldTime:
		return fmt.Errorf("bgp: keepalive %s: want whole seconds, at least 1s, below the hold time", c.Keepalive)
	}
	return nil
}

// PeerState is one session as the status document shows it.
type PeerState struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State string `json:"state"`
	// BFD is the BFD session's state (up, down, init, admindown), empty
	// without BFD.
	BFD string `json:"bfd,omitempty"`
}

// State is the announcer's view for status and metrics.
type State struct {
	// Route is the announced prefix, e.g. 10.77.0.100/32.
	Route     string `json:"route"`
	Announced bool   `json:"announced"`
	// Healthy is Health ready or panic; Panic is set in panic.
	Healthy  bool        `json:"healthy"`
	Panic    bool        `json:"panic,omitempty"`
	Stopping bool        `json:"stopping"`
	Paused   bool        `json:"paused,omitempty"`
	Peers    []PeerState `json:"peers"`
}

// Announcer speaks BGP to the configured peers and announces or withdraws
// the VIP route as Decide says. Its methods are safe to call concurrently.
type Announcer struct {
	cfg    Config
	prefix netip.Prefix
	srv    *server.BgpServer

	mu        sync.Mutex // protects in, announced and stopped; held across gobgp calls so they apply in order
	in        Inputs
	announced bool
	stopped   bool
}

// New builds an announcer; Start opens the sessions.
func New(cfg Config) (*Announcer, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Announcer{cfg: cfg, prefix: netip.PrefixFrom(cfg.VIP, cfg.VIP.BitLen())}, nil
}

// Start runs the BGP speaker, which connects out to every peer (it does
// not listen: the routers are the passive side or connect too, and the
// node's port 179 stays free). The route is not announced until
// SetHealth(Ready). A start that fails stops what it started.
func (a *Announcer) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelWarn)
	srv := server.NewBgpServer(server.LoggerOption(a.cfg.Logger.With("part", "gobgp"), lvl))
	go srv.Serve()
	if err := a.configure(ctx, srv); err != nil {
		srv.Stop()
		return err
	}
	a.srv = srv
	return nil
}

func (a *Announcer) configure(ctx context.Context, srv *server.BgpServer) error {
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        a.cfg.LocalASN,
		RouterId:   a.cfg.RouterID.String(),
		ListenPort: -1,
	}}); err != nil {
		return fmt.Errorf("bgp: start speaker as %d: %w", a.cfg.LocalASN, err)
	}
	// Routes the routers send are kept in gobgp's table only: nothing
	// installs them in the kernel (no zebra), so the node's forwarding is
	// untouched.
	for _, p := range a.cfg.Peers {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: a.peerConf(p)}); err != nil {
			return fmt.Errorf("bgp: add peer %s: %w", p.Address, err)
		}
	}
	return nil
}

func (a *Announcer) peerConf(p Peer) *api.Peer {
	afi := api.Family_AFI_IP
	if a.cfg.VIP.Is6() {
		afi = api.Family_AFI_IP6
	}
	port := p.Port
	if port == 0 {
		port = 179
	}
	var bfd *api.BfdPeerConfig
	if p.BFD {
		us := uint32(BFDInterval / time.Microsecond)
		bfd = &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: us, RequiredMinimumReceive: us, DetectionMultiplier: BFDMultiplier}
	}
	return &api.Peer{
		Bfd:  bfd,
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(a.cfg.HoldTime / time.Second),
			KeepaliveInterval: uint64(a.cfg.Keepalive / time.Second),
			// Retry a refused or lost connection every second: after a
			// router restart the route is back within about a second.
			ConnectRetry:           1,
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{RemotePort: uint32(port)},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{
			Family:  &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST},
			Enabled: true,
		}}},
	}
}

// SetHealth feeds the node's local health; the route follows. Call it
// again while in panic: whether a peer still holds the route is read then.
func (a *Announcer) SetHealth(h Health) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h != a.in.Health {
		a.cfg.Logger.Info("bgp: health", "route", a.prefix, "health", h.String())
	}
	a.in.Health = h
	return a.apply()
}

// SetPaused withdraws the route (paused) or lets it follow the health
// again. A pause that withdrew the route returns, like Stop, once the
// withdrawal left for every established peer and Linger passed, and
// reports withdrew; before Start it only sets the input, so a node that
// restarts in maintenance never announces.
func (a *Announcer) SetPaused(ctx context.Context, paused bool) (withdrew bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.in.Paused = paused
	was := a.announced
	if err := a.apply(); err != nil {
		return false, err
	}
	if !paused || !was || a.announced {
		return false, nil
	}
	a.settle(ctx)
	return true, nil
}

// settle waits for a withdrawal to leave (waitWithdrawn), then Linger.
// a.mu is held.
func (a *Announcer) settle(ctx context.Context) {
	t0 := time.Now()
	a.waitWithdrawn(ctx)
	left := time.Since(t0)
	if a.cfg.Linger > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(a.cfg.Linger):
		}
	}
	a.cfg.Logger.Info("bgp: withdrawal sent", "route", a.prefix, "left_after", left.Round(time.Millisecond), "linger", a.cfg.Linger)
}

// apply runs Decide on the current inputs. a.mu is held.
func (a *Announcer) apply() error {
	if a.srv == nil || a.stopped {
		return nil
	}
	a.in.Held = a.in.Health == Panic && a.announced && a.heldByEstablished()
	switch Decide(a.announced, a.in) {
	case Announce:
		if _, err := a.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{a.path()}}); err != nil {
			return fmt.Errorf("bgp: announce %s: %w", a.prefix, err)
		}
		a.announced = true
		a.cfg.Logger.Info("bgp: announced", "route", a.prefix)
	case Withdraw:
		if err := a.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{a.path()}}); err != nil {
			return fmt.Errorf("bgp: withdraw %s: %w", a.prefix, err)
		}
		a.announced = false
		a.cfg.Logger.Info("bgp: withdrawn", "route", a.prefix, "health", a.in.Health.String(), "held", a.in.Held, "stopping", a.in.Stopping, "paused", a.in.Paused)
	}
	return nil
}

// path is the VIP route. An unspecified next hop is gobgp's "self": each
// peer gets the node's address on that session.
func (a *Announcer) path() *apiutil.Path {
	nlri, _ := bgppkt.NewIPAddrPrefix(a.prefix) // a host prefix of a valid address
	attrs := []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if a.cfg.VIP.Is4() {
		nh, _ := bgppkt.NewPathAttributeNextHop(netip.IPv4Unspecified())
		attrs = append(attrs, nh)
	} else {
		mp, _ := bgppkt.NewPathAttributeMpReachNLRI(bgppkt.RF_IPv6_UC, []bgppkt.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		attrs = append(attrs, mp)
	}
	if len(a.cfg.Communities) > 0 {
		attrs = append(attrs, bgppkt.NewPathAttributeCommunities(a.cfg.Communities))
	}
	return &apiutil.Path{Family: a.family(), Nlri: nlri, Attrs: attrs}
}

// Stop withdraws the route, waits (up to WithdrawWait, or ctx) until no
// established peer still has it in its Adj-RIB-Out and then Linger,
// closes the sessions with a Cease and stops the speaker. Call it before the load balancer
// stops serving: the routers move clients away while they still get
// answers here.
func (a *Announcer) Stop(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv == nil || a.stopped {
		return nil
	}
	a.in.Stopping = true
	was := a.announced
	err := a.apply()
	if was && err == nil {
		a.settle(ctx)
	}
	for _, p := range a.cfg.Peers {
		_ = a.srv.ShutdownPeer(ctx, &api.ShutdownPeerRequest{Address: p.Address.String(), Communication: "haplane agent stopping"})
	}
	_ = a.srv.StopBgp(ctx, &api.StopBgpRequest{})
	a.srv.Stop()
	a.stopped = true
	return err
}

// waitWithdrawn polls the Adj-RIB-Out of every peer until the route is gone
// from all of them. a.mu is held.
func (a *Announcer) waitWithdrawn(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.WithdrawWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for a.advertisedAnywhere() {
		select {
		case <-ctx.Done():
			a.cfg.Logger.Warn("bgp: withdrawal not confirmed before stopping", "route", a.prefix, "waited", a.cfg.WithdrawWait)
			return
		case <-tick.C:
		}
	}
}

func (a *Announcer) family() bgppkt.Family {
	if a.cfg.VIP.Is6() {
		return bgppkt.RF_IPv6_UC
	}
	return bgppkt.RF_IPv4_UC
}

func (a *Announcer) advertisedAnywhere() bool { return a.advertisedTo(a.cfg.Peers) }

// heldByEstablished reports whether an established peer has the route in
// its Adj-RIB-Out: gobgp lists a peer's Adj-RIB-Out from the local table
// whatever the session's state, so a lost session still "has" it there.
// a.mu is held.
func (a *Announcer) heldByEstablished() bool {
	up := map[string]bool{}
	_ = a.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State != nil && p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED {
			up[p.State.NeighborAddress] = true
		}
	})
	var peers []Peer
	for _, p := range a.cfg.Peers {
		if up[p.Address.String()] {
			peers = append(peers, p)
		}
	}
	return len(peers) > 0 && a.advertisedTo(peers)
}

// advertisedTo reports whether the route is in the Adj-RIB-Out of one of
// peers. a.mu is held.
func (a *Announcer) advertisedTo(peers []Peer) bool {
	fam := a.family()
	found := false
	for _, p := range peers {
		_ = a.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_OUT, Name: p.Address.String(), Family: fam},
			func(prefix bgppkt.NLRI, paths []*apiutil.Path) {
				if prefix.String() == a.prefix.String() && len(paths) > 0 {
					found = true
				}
			})
	}
	return found
}

// State reports the sessions and the route.
func (a *Announcer) State(ctx context.Context) State {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := State{Route: a.prefix.String(), Announced: a.announced, Healthy: a.in.Health != Down, Panic: a.in.Health == Panic, Stopping: a.in.Stopping, Paused: a.in.Paused}
	byAddr := map[string]PeerState{}
	if a.srv != nil && !a.stopped {
		_ = a.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.State == nil {
				return
			}
			ps := PeerState{State: sessionName(p.State.SessionState)}
			if b := p.State.BfdState; b != nil {
				ps.BFD = bfdName(b.SessionState.String())
			}
			byAddr[p.State.NeighborAddress] = ps
		})
	}
	for _, p := range a.cfg.Peers {
		ps, ok := byAddr[p.Address.String()]
		if !ok {
			ps.State = "idle"
		}
		ps.Address, ps.ASN = p.Address.String(), p.ASN
		st.Peers = append(st.Peers, ps)
	}
	return st
}

func sessionName(s api.PeerState_SessionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SESSION_STATE_"))
}

// bfdName shortens gobgp's BFD state names: "BFD_SESSION_STATE_ADMIN_DOWN"
// is "admindown", as RFC 5880 writes AdminDown.
func bfdName(s string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(s, "BFD_SESSION_STATE_"), "_", ""))
}
