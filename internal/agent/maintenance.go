package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/health"
)

// Maintenance takes a node out of service for planned work and puts it
// back (issue 16): on start it hands the VIP over (in vip.mode bgp it
// withdraws the node's route), takes the node's apiserver out of every
// load balancer's pool and waits for its sessions to drain, moves etcd leadership away, and says when kubelet or the
// apiserver may be stopped; stop reverses it once the node is healthy
// again. Entering is refused when it would leave the cluster without a
// ready apiserver or without etcd quorum (MayEnterMaintenance).
//
// The other nodes' load balancers learn of it from this node's /status,
// which their PeerWatcher reads: a backend whose node is in maintenance is
// left out of the pool. The state is kept in a file of the agent's state
// folder, so a restarted agent stays in maintenance and does not take the
// VIP back.
type Maintenance struct {
	cfg MaintenanceConfig

	op sync.Mutex // held by a start or stop: one change at a time

	mu    sync.Mutex // protects state
	state MaintenanceState
}

// MaintenanceConfig wires the parts maintenance acts on; nil parts are
// steps skipped (reported as such).
type MaintenanceConfig struct {
	Node     string
	StateDir string
	VIP      *VIPPart
	// BGP is the announcer in vip.mode bgp (VIP is nil then): maintenance
	// withdraws this node's route and stop announces it again.
	BGP *BGPPart
	LB  *LBPart
	// Etcd is nil when this node runs no etcd member.
	Etcd  *EtcdAccess
	Peers *PeerWatcher
	// APIServers maps every control-plane node to its apiserver's
	// host:port, as the load balancers' pools name them.
	APIServers map[string]string
	Log        *slog.Logger
}

// EtcdAccess reaches the etcd cluster this node's member belongs to.
type EtcdAccess struct {
	TLS     *tls.Config
	Targets []etcdnode.Target
}

// MaintenanceStateFile is the file, in the agent's state folder, that
// keeps the maintenance state across restarts.
const MaintenanceStateFile = "maintenance.json"

// MaintenanceState is the persisted state, served under "maintenance" in
// /status.
type MaintenanceState struct {
	Active bool      `json:"active"`
	Since  time.Time `json:"since,omitzero"`
	// KeepVIP: entered with MaintenanceOptions.KeepVIP (the speaker runs).
	KeepVIP bool `json:"keepVIP,omitempty"`
	// Last is the last start or stop, with its steps.
	Last *MaintenanceResult `json:"last,omitempty"`
}

// MaintenanceStep is one bounded step of a start or stop.
type MaintenanceStep struct {
	Name       string  `json:"name"`
	OK         bool    `json:"ok"`
	DurationMS float64 `json:"durationMs"`
	Detail     string  `json:"detail"`
}

// MaintenanceResult is what a start or stop did.
type MaintenanceResult struct {
	Node   string `json:"node"`
	Action string `json:"action"`
	OK     bool   `json:"ok"`
	// Refused is the one-line reason nothing was changed.
	Refused string            `json:"refused,omitempty"`
	Steps   []MaintenanceStep `json:"steps,omitempty"`
	At      time.Time         `json:"at"`
}

// MaintenanceOptions tune a start.
type MaintenanceOptions struct {
	// DrainTimeout bounds the wait for the apiserver's sessions to end
	// (default 30s).
	DrainTimeout Duration `json:"drainTimeout,omitzero"`
	// KeepVIP leaves the VRRP speaker running: the node keeps the VIP if
	// it holds it, and its load balancer goes on sending clients to the
	// other apiservers. For work on the control-plane components alone
	// (an upgrade of kube-apiserver), where the agent stays up: a VIP
	// that moves breaks every session in flight through the old holder,
	// kubelets' watches included. Host work (a reboot) needs the handover.
	KeepVIP bool `json:"keepVIP,omitempty"`
}

// Duration is a time.Duration that reads and writes as "30s".
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Refusal is a maintenance change refused before anything changed.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return "maintenance refused: " + r.Reason }

// APIServerView is one control-plane node's apiserver as this node's
// health checks see it.
type APIServerView struct {
	Node        string
	Ready       bool
	Maintenance bool
}

// EtcdMemberView is one etcd member as a probe of the cluster sees it.
type EtcdMemberView struct {
	Name        string
	Voter       bool
	Healthy     bool
	Maintenance bool // its node is in maintenance
}

// MaintenanceView is what MayEnterMaintenance decides on.
type MaintenanceView struct {
	Node   string
	Active bool // the node is in maintenance already
	// APIServers is nil when this agent runs no health checks.
	APIServers []APIServerView
	EtcdMember bool
	Etcd       []EtcdMemberView
	// EtcdErr says why etcd could not be read ("" when it was).
	EtcdErr string
}

// MayEnterMaintenance is the pure decision on a start: it refuses, with
// the reason, when node is in maintenance already, when no other
// control-plane node's apiserver is ready and out of maintenance (the
// cluster would be left without one), or when node's etcd member is a
// voter and the voters left healthy (not node's, not of a node in
// maintenance) would be fewer than a quorum.
func MayEnterMaintenance(v MaintenanceView) error {
	if v.Active {
		return &Refusal{v.Node + " is in maintenance already"}
	}
	if v.APIServers == nil {
		return &Refusal{"this agent runs no health checks of the kube-apiservers, so it cannot tell whether another one is ready"}
	}
	var others []string
	ready := 0
	for _, a := range v.APIServers {
		if a.Node == v.Node {
			continue
		}
		switch {
		case a.Maintenance:
			others = append(others, a.Node+" in maintenance")
		case a.Ready:
			ready++
		default:
			others = append(others, a.Node+" not ready")
		}
	}
	if ready == 0 {
		why := "it is the only control-plane node"
		if len(others) > 0 {
			why = strings.Join(others, ", ")
		}
		return &Refusal{fmt.Sprintf("no other kube-apiserver is ready (%s): the cluster would be left without one", why)}
	}
	if !v.EtcdMember {
		return nil
	}
	if v.EtcdErr != "" {
		return &Refusal{"cannot tell whether etcd keeps its quorum without " + v.Node + "'s member: " + v.EtcdErr}
	}
	voters, left := 0, 0
	self := false
	for _, m := range v.Etcd {
		if !m.Voter {
			continue
		}
		voters++
		if m.Name == v.Node {
			self = true
			continue
		}
		if m.Healthy && !m.Maintenance {
			left++
		}
	}
	if !self {
		return nil // a learner, or not listed: the quorum does not count it
	}
	if q := voters/2 + 1; left < q {
		return &Refusal{fmt.Sprintf("etcd would lose its quorum: %d of %d voting members would stay healthy without %s, %d needed", left, voters, v.Node, q)}
	}
	return nil
}

// LeaveView is what MayLeaveMaintenance decides on.
type LeaveView struct {
	Node   string
	Active bool
	// LocalChecked: this agent checks its own apiserver; LocalReady is
	// the verdict.
	LocalChecked, LocalReady bool
	EtcdMember               bool
	EtcdHealthy              bool
	EtcdErr                  string
}

// MayLeaveMaintenance is the pure decision on a stop: the node must be in
// maintenance, and healthy again: its apiserver ready (when checked) and
// its etcd member healthy (when it has one).
func MayLeaveMaintenance(v LeaveView) error {
	if !v.Active {
		return &Refusal{v.Node + " is not in maintenance"}
	}
	if v.LocalChecked && !v.LocalReady {
		return &Refusal{v.Node + "'s kube-apiserver is not ready yet: start kubelet and the apiserver before leaving maintenance"}
	}
	if v.EtcdMember && v.EtcdErr != "" {
		return &Refusal{"cannot read " + v.Node + "'s etcd member: " + v.EtcdErr}
	}
	if v.EtcdMember && !v.EtcdHealthy {
		return &Refusal{v.Node + "'s etcd member is not healthy yet"}
	}
	return nil
}

// NewMaintenance loads the persisted state. A node that was in
// maintenance stays in it: the speaker will not start and the node's
// apiserver stays out of its own load balancer's pool.
func NewMaintenance(cfg MaintenanceConfig) (*Maintenance, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	m := &Maintenance{cfg: cfg}
	data, err := os.ReadFile(m.path())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("agent: maintenance state: %w", err)
	default:
		if err := json.Unmarshal(data, &m.state); err != nil {
			return nil, fmt.Errorf("agent: maintenance state %s: %w", m.path(), err)
		}
	}
	if m.state.Active {
		cfg.Log.Warn("this node is in maintenance (haplane maintenance stop ends it)", "since", m.state.Since)
		if cfg.VIP != nil && !m.state.KeepVIP {
			cfg.VIP.SetPausedAtStart()
		}
		if cfg.BGP != nil && !m.state.KeepVIP {
			cfg.BGP.SetPausedAtStart()
		}
	}
	m.applyExclusions()
	if cfg.Peers != nil {
		cfg.Peers.setOnChange(m.applyExclusions)
	}
	return m, nil
}

func (m *Maintenance) path() string { return filepath.Join(m.cfg.StateDir, MaintenanceStateFile) }

// State returns the current state.
func (m *Maintenance) State() MaintenanceState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Active reports whether the node is in maintenance.
func (m *Maintenance) Active() bool { return m.State().Active }

// save writes the state atomically (rename), so a crash leaves the old or
// the new one.
func (m *Maintenance) save(st MaintenanceState) error {
	m.mu.Lock()
	m.state = st
	m.mu.Unlock()
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := m.path() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("agent: maintenance state: %w", err)
	}
	if err := os.Rename(tmp, m.path()); err != nil {
		return fmt.Errorf("agent: maintenance state: %w", err)
	}
	return nil
}

// inMaintenance lists the nodes in maintenance: this one and the peers
// that say so.
func (m *Maintenance) inMaintenance() map[string]bool {
	out := map[string]bool{}
	if m.Active() {
		out[m.cfg.Node] = true
	}
	if m.cfg.Peers != nil {
		for n, d := range m.cfg.Peers.Docs() {
			if d.Maintenance {
				out[n] = true
			}
		}
	}
	return out
}

// applyExclusions leaves the apiservers of the nodes in maintenance out of
// this node's load balancer's pool.
func (m *Maintenance) applyExclusions() {
	if m.cfg.LB == nil {
		return
	}
	var addrs []string
	for n := range m.inMaintenance() {
		if a, ok := m.cfg.APIServers[n]; ok {
			addrs = append(addrs, a)
		}
	}
	m.cfg.LB.SetExcluded(addrs)
}

// view gathers what MayEnterMaintenance decides on.
func (m *Maintenance) view(ctx context.Context) MaintenanceView {
	v := MaintenanceView{Node: m.cfg.Node, Active: m.Active()}
	inMaint := m.inMaintenance()
	if m.cfg.LB != nil {
		v.APIServers = []APIServerView{}
		for n, a := range m.cfg.APIServers {
			v.APIServers = append(v.APIServers, APIServerView{Node: n, Ready: m.cfg.LB.checker.Status(a) == health.Up, Maintenance: inMaint[n]})
		}
		sort.Slice(v.APIServers, func(i, j int) bool { return v.APIServers[i].Node < v.APIServers[j].Node })
	}
	if m.cfg.Etcd != nil {
		v.EtcdMember = true
		r, err := m.probeEtcd(ctx)
		if err != nil {
			v.EtcdErr = err.Error()
		}
		for _, s := range r.Members {
			v.Etcd = append(v.Etcd, EtcdMemberView{Name: s.Name, Voter: !s.Learner && s.ID != "", Healthy: s.Healthy, Maintenance: inMaint[s.Name]})
		}
	}
	return v
}

func (m *Maintenance) probeEtcd(ctx context.Context) (etcdnode.Report, error) {
	p := etcdnode.NewProber(m.cfg.Etcd.TLS, 2*time.Second, 0)
	defer p.Close()
	r := p.Probe(ctx, m.cfg.Etcd.Targets)
	if !r.Listed {
		return r, errors.New("no member answered with the member list")
	}
	return r, nil
}

// ErrMaintenanceBusy is returned while another start or stop runs.
var ErrMaintenanceBusy = &Refusal{"another maintenance start or stop is running on this node"}

// Start enters maintenance (see Maintenance). A *Refusal changed nothing;
// otherwise the node is in maintenance, and the result says how each step
// went.
func (m *Maintenance) Start(ctx context.Context, opts MaintenanceOptions) (MaintenanceResult, error) {
	if !m.op.TryLock() {
		return m.refused("start", ErrMaintenanceBusy)
	}
	defer m.op.Unlock()
	if err := MayEnterMaintenance(m.view(ctx)); err != nil {
		return m.refused("start", err)
	}
	drain := time.Duration(opts.DrainTimeout)
	if drain <= 0 {
		drain = 30 * time.Second
	}
	res := MaintenanceResult{Node: m.cfg.Node, Action: "start", At: time.Now()}
	st := MaintenanceState{Active: true, Since: time.Now(), KeepVIP: opts.KeepVIP}
	// Persisted first: an agent that dies halfway restarts in maintenance.
	if err := m.save(st); err != nil {
		return res, err
	}
	m.cfg.Log.Info("entering maintenance")
	switch {
	case opts.KeepVIP && m.cfg.BGP != nil:
		res.Steps = append(res.Steps, step("vip-kept", func() (bool, string) {
			return true, "the VIP route stays announced (keep-vip): this node's load balancer sends clients to the other apiservers"
		}))
	case opts.KeepVIP:
		res.Steps = append(res.Steps, step("vip-kept", func() (bool, string) {
			return true, "the VRRP speaker keeps running (keep-vip): this node's load balancer sends clients to the other apiservers"
		}))
	case m.cfg.BGP != nil:
		res.Steps = append(res.Steps, step("bgp-withdraw", func() (bool, string) { return m.cfg.BGP.Pause(ctx) }))
	default:
		res.Steps = append(res.Steps, step("vip-handover", func() (bool, string) { return m.handOverVIP(ctx) }))
	}
	res.Steps = append(res.Steps, step("lb-drain", func() (bool, string) { return m.drain(ctx, drain) }))
	res.Steps = append(res.Steps, step("etcd-leader", func() (bool, string) { return m.moveEtcdLeader(ctx) }))
	res.OK = true
	for _, s := range res.Steps {
		res.OK = res.OK && s.OK
	}
	final := MaintenanceStep{Name: "ready", OK: res.OK, Detail: "safe to stop kubelet or the kube-apiserver on " + m.cfg.Node + " now"}
	if !res.OK {
		final.Detail = m.cfg.Node + " is in maintenance, but a step above failed: check it before stopping kubelet or the kube-apiserver"
	}
	res.Steps = append(res.Steps, final)
	st.Last = &res
	m.log(res)
	return res, m.save(st)
}

// Stop leaves maintenance once the node is healthy again: its apiserver
// goes back into every pool, then its speaker rejoins the virtual router.
// etcd leadership is not moved back: any healthy member leads as well.
func (m *Maintenance) Stop(ctx context.Context) (MaintenanceResult, error) {
	if !m.op.TryLock() {
		return m.refused("stop", ErrMaintenanceBusy)
	}
	defer m.op.Unlock()
	lv := LeaveView{Node: m.cfg.Node, Active: m.Active()}
	if m.cfg.LB != nil {
		if a, ok := m.cfg.APIServers[m.cfg.Node]; ok {
			lv.LocalChecked, lv.LocalReady = true, m.cfg.LB.checker.Status(a) == health.Up
		}
	}
	if lv.Active && m.cfg.Etcd != nil {
		lv.EtcdMember = true
		r, err := m.probeEtcd(ctx)
		if err != nil {
			lv.EtcdErr = err.Error()
		}
		for _, s := range r.Members {
			if s.Name == m.cfg.Node {
				lv.EtcdHealthy = s.Healthy || s.Learner && s.Serving
			}
		}
	}
	if err := MayLeaveMaintenance(lv); err != nil {
		return m.refused("stop", err)
	}
	res := MaintenanceResult{Node: m.cfg.Node, Action: "stop", At: time.Now()}
	st := MaintenanceState{}
	if err := m.save(st); err != nil {
		return res, err
	}
	m.cfg.Log.Info("leaving maintenance")
	res.Steps = append(res.Steps, step("lb-back-in-pool", func() (bool, string) { return m.backInPool(ctx) }))
	if m.cfg.BGP != nil {
		res.Steps = append(res.Steps, step("bgp-announce", func() (bool, string) { return m.cfg.BGP.Resume(ctx) }))
	} else {
		res.Steps = append(res.Steps, step("vip-rejoin", func() (bool, string) { return m.rejoinVIP(ctx) }))
	}
	res.OK = true
	for _, s := range res.Steps {
		res.OK = res.OK && s.OK
	}
	st.Last = &res
	m.log(res)
	return res, m.save(st)
}

func (m *Maintenance) refused(action string, err error) (MaintenanceResult, error) {
	res := MaintenanceResult{Node: m.cfg.Node, Action: action, At: time.Now()}
	var r *Refusal
	if errors.As(err, &r) {
		res.Refused = r.Reason
	}
	m.cfg.Log.Warn("maintenance "+action+" refused", "reason", res.Refused)
	return res, err
}

func (m *Maintenance) log(res MaintenanceResult) {
	for _, s := range res.Steps {
		lvl := slog.LevelInfo
		if !s.OK {
			lvl = slog.LevelWarn
		}
		m.cfg.Log.Log(context.Background(), lvl, "maintenance "+res.Action, "step", s.Name, "ok", s.OK, "took_ms", s.DurationMS, "detail", s.Detail)
	}
}

// step times f.
func step(name string, f func() (bool, string)) MaintenanceStep {
	t0 := time.Now()
	ok, detail := f()
	return MaintenanceStep{Name: name, OK: ok, Detail: detail, DurationMS: float64(time.Since(t0).Microseconds()) / 1000}
}

// waitFor polls cond every 50ms until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
}

// vipWait bounds the wait for the VIP's new holder to be reported.
const vipWait = 3 * time.Second

func (m *Maintenance) handOverVIP(ctx context.Context) (bool, string) {
	if m.cfg.VIP == nil {
		return true, "skipped: this agent runs no VRRP speaker"
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	held, err := m.cfg.VIP.Pause(sctx)
	if err != nil {
		return false, "stopping the VRRP speaker: " + err.Error()
	}
	if !held {
		return true, "not the VIP's holder: the speaker stopped so it will not take the VIP during maintenance"
	}
	if m.cfg.Peers == nil {
		return true, "priority-0 advert sent and the VIP released"
	}
	m.cfg.Peers.Refresh()
	var holder string
	if waitFor(ctx, vipWait, func() bool {
		holder = m.cfg.Peers.fresh(time.Time{}).vipMaster()
		return holder != ""
	}) {
		return true, "priority-0 advert sent and the VIP released; " + holder + " holds it now"
	}
	return false, fmt.Sprintf("priority-0 advert sent and the VIP released, but no other node reported holding it within %v", vipWait)
}

// drain waits until this node's apiserver is out of every load
// balancer's pool (this node's and each peer's that answers) with no
// session left on it.
func (m *Maintenance) drain(ctx context.Context, d time.Duration) (bool, string) {
	if m.cfg.LB == nil && m.cfg.Peers == nil {
		return true, "skipped: no load balancer to drain"
	}
	addr, ok := m.cfg.APIServers[m.cfg.Node]
	if !ok {
		return true, "skipped: this node runs no kube-apiserver"
	}
	m.applyExclusions()
	since := time.Now()
	if m.cfg.Peers != nil {
		m.cfg.Peers.Refresh()
	}
	var pending []string
	var seen int
	inPool := false // some load balancer still sends new sessions there
	done := waitFor(ctx, d, func() bool {
		pending, seen, inPool = nil, 0, false
		if m.cfg.LB != nil {
			if in, active := m.cfg.LB.backend(addr); in || active > 0 {
				pending = append(pending, fmt.Sprintf("%s (in pool %v, %d sessions)", m.cfg.Node, in, active))
				inPool = inPool || in
			}
			seen++
		}
		if m.cfg.Peers != nil {
			for n, doc := range m.cfg.Peers.fresh(since) {
				if doc.Err != "" || !doc.HasLB {
					continue
				}
				seen++
				in, active := doc.backend(addr)
				if in || active > 0 {
					pending = append(pending, fmt.Sprintf("%s (in pool %v, %d sessions)", n, in, active))
					inPool = inPool || in
				}
			}
			if m.cfg.Peers.missing(since) > 0 {
				m.cfg.Peers.Refresh()
				return false
			}
		}
		return len(pending) == 0
	})
	unreachable := ""
	if m.cfg.Peers != nil {
		if names := m.cfg.Peers.unreachable(); len(names) > 0 {
			unreachable = "; not heard from " + strings.Join(names, ", ")
		}
	}
	if done && unreachable != "" {
		// A peer that does not answer may still send sessions to this
		// node's apiserver: say so, and do not call it drained.
		return false, fmt.Sprintf("%s out of %d load balancers' pools, no session left there%s", addr, seen, unreachable)
	}
	if !done {
		if len(pending) == 0 {
			return false, fmt.Sprintf("peers did not report within %v%s", d, unreachable)
		}
		if !inPool && unreachable == "" {
			// Out of every pool: what is left are long-lived sessions
			// (watches of kubelets and controllers), which never end by
			// themselves. A kube-apiserver that stops sends them GOAWAY
			// and its clients reconnect through a load balancer, to
			// another apiserver: stopping it now is safe.
			return true, fmt.Sprintf("%s out of %d load balancers' pools; after %v long-lived sessions remain: %s; they move when the apiserver stops (it sends GOAWAY)", addr, seen, d, strings.Join(pending, ", "))
		}
		return false, fmt.Sprintf("still draining after %v: %s; those sessions end when the apiserver stops%s", d, strings.Join(pending, ", "), unreachable)
	}
	return true, fmt.Sprintf("%s out of %d load balancers' pools, no session left%s", addr, seen, unreachable)
}

func (m *Maintenance) moveEtcdLeader(ctx context.Context) (bool, string) {
	if m.cfg.Etcd == nil {
		return true, "skipped: this node runs no etcd member"
	}
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p := etcdnode.NewProber(m.cfg.Etcd.TLS, 2*time.Second, 0)
	defer p.Close()
	mv, err := etcdnode.MoveLeaderAway(ectx, p, m.cfg.Etcd.TLS, m.cfg.Etcd.Targets, m.cfg.Node)
	switch {
	case err != nil:
		return false, err.Error()
	case !mv.Led:
		return true, "this member does not lead (the leader is " + mv.From + ")"
	}
	return true, "leadership moved from " + mv.From + " to " + mv.To
}

func (m *Maintenance) backInPool(ctx context.Context) (bool, string) {
	addr, ok := m.cfg.APIServers[m.cfg.Node]
	if !ok || m.cfg.LB == nil && m.cfg.Peers == nil {
		return true, "skipped: no load balancer pool to rejoin"
	}
	m.applyExclusions()
	since := time.Now()
	if m.cfg.Peers != nil {
		m.cfg.Peers.Refresh()
	}
	var pending []string
	seen := 0
	done := waitFor(ctx, 10*time.Second, func() bool {
		pending, seen = nil, 0
		if m.cfg.LB != nil {
			seen++
			if in, _ := m.cfg.LB.backend(addr); !in {
				pending = append(pending, m.cfg.Node)
			}
		}
		if m.cfg.Peers != nil {
			for n, doc := range m.cfg.Peers.fresh(since) {
				if doc.Err != "" || !doc.HasLB {
					continue
				}
				seen++
				if in, _ := doc.backend(addr); !in {
					pending = append(pending, n)
				}
			}
			if m.cfg.Peers.missing(since) > 0 {
				m.cfg.Peers.Refresh()
				return false
			}
		}
		return len(pending) == 0
	})
	if !done {
		slices.Sort(pending)
		return false, fmt.Sprintf("%s not back in the pool of %s after 10s", addr, strings.Join(pending, ", "))
	}
	return true, fmt.Sprintf("%s back in %d load balancers' pools", addr, seen)
}

func (m *Maintenance) rejoinVIP(ctx context.Context) (bool, string) {
	if m.cfg.VIP == nil {
		return true, "skipped: this agent runs no VRRP speaker"
	}
	if err := m.cfg.VIP.Resume(); err != nil {
		return false, err.Error()
	}
	var state string
	waitFor(ctx, vipWait, func() bool {
		state = m.cfg.VIP.sp.Status().State.String()
		return state == "master" || state == "backup"
	})
	return true, "the VRRP speaker runs again (" + state + "); the VIP comes back if this node has the highest priority and preempts"
}

// ServeChange handles a start or stop request: the body may hold
// MaintenanceOptions. A refusal is 409 with the result, a failed step 500.
func (m *Maintenance) ServeChange(w http.ResponseWriter, r *http.Request, action string) {
	var opts MaintenanceOptions
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&opts); err != nil {
			http.Error(w, "maintenance: bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	var res MaintenanceResult
	var err error
	switch action {
	case "start":
		res, err = m.Start(r.Context(), opts)
	case "stop":
		res, err = m.Stop(r.Context())
	default:
		http.Error(w, "maintenance: the action is start or stop", http.StatusNotFound)
		return
	}
	code := http.StatusOK
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		code = http.StatusConflict
	case err != nil:
		code = http.StatusInternalServerError
		res.Refused = ""
		res.Steps = append(res.Steps, MaintenanceStep{Name: "state", Detail: err.Error()})
	case !res.OK:
		code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(res)
}

// AdminOrgs are the organizations of the cluster's admin identity: kubeadm
// writes admin.conf with kubeadm:cluster-admins and super-admin.conf with
// system:masters.
var AdminOrgs = []string{"kubeadm:cluster-admins", "system:masters"}

// IsAdmin reports whether a verified client certificate is of the
// cluster's admin identity.
func IsAdmin(cert *x509.Certificate) bool {
	for _, o := range cert.Subject.Organization {
		if slices.Contains(AdminOrgs, o) {
			return true
		}
	}
	return false
}
