package etcdnode

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MemberStatus is one member as `haplane etcd status` shows it.
type MemberStatus struct {
	Name     string   `json:"name"`
	ID       string   `json:"id,omitempty"` // hex, as etcdctl prints it
	Endpoint string   `json:"endpoint"`
	PeerURLs []string `json:"peerURLs,omitempty"`
	// Started is false for a member that was added but never ran.
	Started bool `json:"started"`
	Learner bool `json:"learner"`
	// Reachable: the member answered its status RPC.
	Reachable bool `json:"reachable"`
	// Healthy is etcdctl endpoint health's verdict: a linearizable read
	// of key "health" succeeded and the cluster has no alarm. A learner
	// is never healthy, as etcdctl says too: it refuses linearizable
	// reads. Serving tells whether it answers.
	Healthy bool `json:"healthy"`
	// Serving: that read succeeded, alarms aside; for a learner, a
	// serializable read from its own copy succeeded. Under the NOSPACE
	// alarm every member is unhealthy yet serving: the cluster keeps its
	// quorum (reads, deletes and compaction go on) and only refuses new
	// data.
	Serving bool   `json:"serving"`
	Error   string `json:"error,omitempty"`
	// ReadLatency is the time of that read (the serializable one for a
	// learner), in seconds.
	ReadLatency float64 `json:"readLatencySeconds"`
	Leader      bool    `json:"leader"`
	LeaderID    string  `json:"leaderID,omitempty"`
	RaftTerm    uint64  `json:"raftTerm"`
	RaftIndex   uint64  `json:"raftIndex"`
	Applied     uint64  `json:"raftAppliedIndex"`
	// Lag is the leader's raft index minus this member's.
	Lag         uint64 `json:"lag"`
	DBSize      int64  `json:"dbSize"`
	DBSizeInUse int64  `json:"dbSizeInUse"`
	// Quota is the backend quota the member reports (etcd 3.6 and later),
	// else the one the prober was given.
	Quota   int64    `json:"quotaBytes"`
	Alarms  []string `json:"alarms,omitempty"`
	Version string   `json:"version,omitempty"`
}

// Verdicts of a Report.
const (
	// VerdictHealthy: every member healthy, no alarm.
	VerdictHealthy = "healthy"
	// VerdictDegraded: a quorum stays healthy after losing one more voting
	// member, but some member is unhealthy.
	VerdictDegraded = "degraded"
	// VerdictNoFaultTolerance: a quorum is healthy but losing one more
	// voting member loses it, or an alarm is raised.
	VerdictNoFaultTolerance = "no-fault-tolerance"
	// VerdictNoQuorum: fewer healthy voting members than a quorum; the
	// cluster cannot commit writes.
	VerdictNoQuorum = "no-quorum"
)

// Report is the status of the whole cluster.
type Report struct {
	Members       []MemberStatus `json:"members"`
	Voters        int            `json:"voters"`
	HealthyVoters int            `json:"healthyVoters"`
	// ServingVoters are the voting members that are healthy or only
	// unhealthy because of an alarm: what the quorum counts.
	ServingVoters int `json:"servingVoters"`
	Quorum        int `json:"quorum"`
	// FaultTolerance is how many more voting members may fail before the
	// quorum is lost (negative when it is lost already), counting serving
	// members.
	FaultTolerance int      `json:"faultTolerance"`
	Alarms         []string `json:"alarms,omitempty"`
	Verdict        string   `json:"verdict"`
	// FaultTolerant is the exit status of `haplane etcd status`: true when
	// HealthyVoters >= Quorum+1 and no alarm is raised. A one-member
	// cluster is never fault tolerant.
	FaultTolerant bool `json:"faultTolerant"`
	// Listed: some member returned the member list. Without it the report
	// only holds the members of the cluster file, and Live returns nil.
	Listed bool `json:"listed"`
}

// Live converts the report to the plan's view, or nil when no member was
// reachable.
func (r Report) Live() []LiveMember {
	if !r.Listed {
		// Members may answer TCP, or even status, before they serve the
		// member list (a restarted member waiting for its peers): without
		// the list nothing can be said about membership.
		return nil
	}
	var out []LiveMember
	any := false
	for _, m := range r.Members {
		if m.Reachable {
			any = true
		}
		if m.ID == "" {
			continue // configured but not in the member list
		}
		var id uint64
		fmt.Sscanf(m.ID, "%x", &id)
		// To the plan a learner that serves is alive: it must not be
		// removed as stale. Learners never count towards the quorum.
		alive := m.Healthy || m.Learner && m.Serving
		out = append(out, LiveMember{ID: id, Name: m.Name, PeerURLs: m.PeerURLs, Learner: m.Learner, Healthy: alive, Started: m.Started})
	}
	if !any {
		return nil
	}
	return out
}

// Prober checks etcd members. It keeps one client per endpoint across
// probes; Close releases them.
type Prober struct {
	tls *tls.Config
	// Timeout bounds each probe of one member, so a probe of the whole
	// cluster returns within about Timeout however many members hang.
	timeout time.Duration
	quota   int64

	mu      sync.Mutex // protects clients
	clients map[string]*clientv3.Client
}

// NewProber returns a prober presenting tc; quota is the configured backend
// quota shown next to each database size (0: etcd's default).
func NewProber(tc *tls.Config, timeout time.Duration, quota int64) *Prober {
	if timeout <= 0 {
		timeout = time.Second
	}
	if quota == 0 {
		quota = DefaultQuotaBackendBytes
	}
	return &Prober{tls: tc, timeout: timeout, quota: quota, clients: map[string]*clientv3.Client{}}
}

// Close closes every client.
func (p *Prober) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, c := range p.clients {
		c.Close()
		delete(p.clients, k)
	}
}

func (p *Prober) client(endpoint string) (*clientv3.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[endpoint]; ok {
		return c, nil
	}
	c, err := NewClient([]string{endpoint}, p.tls, p.timeout)
	if err != nil {
		return nil, err
	}
	p.clients[endpoint] = c
	return c, nil
}

// Target is a member expected from the cluster file.
type Target struct {
	Name     string
	Endpoint string
}

// Probe checks every target and every member the cluster lists, all at
// once, and returns within about the prober's timeout.
func (p *Prober) Probe(ctx context.Context, targets []Target) Report {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	// The member list, serializable so it is known without a quorum.
	type listed struct {
		members []*memberInfo
		err     error
	}
	lists := make(chan listed, len(targets))
	for _, t := range targets {
		go func() {
			if err := dialCheck(ctx, t.Endpoint); err != nil {
				lists <- listed{err: err}
				return
			}
			c, err := p.client(t.Endpoint)
			if err != nil {
				lists <- listed{err: err}
				return
			}
			resp, err := c.MemberList(ctx, clientv3.WithSerializable())
			if err != nil {
				lists <- listed{err: err}
				return
			}
			var ms []*memberInfo
			for _, m := range resp.Members {
				ms = append(ms, &memberInfo{id: m.ID, name: m.Name, peerURLs: m.PeerURLs, clientURLs: m.ClientURLs, learner: m.IsLearner})
			}
			lists <- listed{members: ms}
		}()
	}
	// The first member list that arrives wins; a dead member's call would
	// otherwise hold the whole probe until the deadline.
	var members []*memberInfo
	for range targets {
		l := <-lists
		if l.err == nil {
			members = l.members
			break
		}
	}

	// Merge: members listed by the cluster, then configured ones it lacks.
	rows := make([]MemberStatus, 0, len(targets)+len(members))
	for _, m := range members {
		ms := MemberStatus{Name: m.name, ID: fmt.Sprintf("%x", m.id), PeerURLs: m.peerURLs, Learner: m.learner, Started: len(m.clientURLs) > 0, Quota: p.quota}
		if len(m.clientURLs) > 0 {
			ms.Endpoint = m.clientURLs[0]
		}
		for _, t := range targets {
			if t.Name == m.name && m.name != "" {
				ms.Endpoint = t.Endpoint
			}
		}
		rows = append(rows, ms)
	}
	for _, t := range targets {
		if !slices.ContainsFunc(rows, func(r MemberStatus) bool { return r.Name == t.Name }) {
			rows = append(rows, MemberStatus{Name: t.Name, Endpoint: t.Endpoint, Quota: p.quota, Error: "not in the cluster's member list"})
		}
	}

	var wg sync.WaitGroup
	for i := range rows {
		if rows[i].Endpoint == "" {
			rows[i].Error = "never started: no client URL yet"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.probeOne(ctx, &rows[i])
		}()
	}
	wg.Wait()
	rep := summarize(rows)
	rep.Listed = members != nil
	return rep
}

// dialCheck opens and closes a TCP connection to the endpoint. gRPC calls
// wait for a connection until their deadline, so without this a member
// that refuses connections (stopped, or not started yet) would cost the
// whole timeout instead of failing at once.
func dialCheck(ctx context.Context, endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return fmt.Errorf("unreachable: %w", err)
	}
	return c.Close()
}

type memberInfo struct {
	id         uint64
	name       string
	peerURLs   []string
	clientURLs []string
	learner    bool
}

// probeOne fills r from the member at r.Endpoint: status RPC, then the
// health read and alarm list that etcdctl endpoint health does.
func (p *Prober) probeOne(ctx context.Context, r *MemberStatus) {
	if err := dialCheck(ctx, r.Endpoint); err != nil {
		r.Error = err.Error()
		return
	}
	c, err := p.client(r.Endpoint)
	if err != nil {
		r.Error = err.Error()
		return
	}
	st, err := c.Status(ctx, r.Endpoint)
	if err != nil {
		r.Error = fmt.Sprintf("status: %v", err)
		return
	}
	r.Reachable = true
	r.Version = st.Version
	r.RaftTerm, r.RaftIndex, r.Applied = st.RaftTerm, st.RaftIndex, st.RaftAppliedIndex
	r.DBSize, r.DBSizeInUse = st.DbSize, st.DbSizeInUse
	if st.DbSizeQuota > 0 {
		r.Quota = st.DbSizeQuota
	}
	r.Learner = st.IsLearner
	if st.Leader != 0 {
		r.LeaderID = fmt.Sprintf("%x", st.Leader)
	}
	r.Leader = st.Header != nil && st.Leader != 0 && st.Leader == st.Header.MemberId
	if r.ID == "" && st.Header != nil {
		r.ID = fmt.Sprintf("%x", st.Header.MemberId)
	}
	var errs []string
	errs = append(errs, st.Errors...)

	// etcdctl endpoint health's read: linearizable, so it goes through the
	// leader. A learner refuses it (rpc not supported for learner), which
	// makes it unhealthy to etcdctl, and to this verdict too.
	start := time.Now()
	_, err = c.Get(ctx, "health")
	r.ReadLatency = time.Since(start).Seconds()
	healthy := err == nil || errors.Is(err, rpctypes.ErrPermissionDenied)
	if !healthy {
		errs = append(errs, fmt.Sprintf("read: %v", err))
	}
	r.Serving = healthy
	if r.Learner {
		// What a learner can do is serve serializable reads from its own
		// copy: that read gives its latency and whether it serves.
		start := time.Now()
		_, err := c.Get(ctx, "health", clientv3.WithSerializable())
		r.ReadLatency = time.Since(start).Seconds()
		r.Serving = err == nil || errors.Is(err, rpctypes.ErrPermissionDenied)
		if !r.Serving {
			errs = append(errs, fmt.Sprintf("serializable read: %v", err))
		}
	}
	if healthy {
		al, err := c.AlarmList(ctx)
		if err != nil {
			healthy = false
			errs = append(errs, fmt.Sprintf("alarm list: %v", err))
		} else {
			for _, a := range al.Alarms {
				r.Alarms = append(r.Alarms, fmt.Sprintf("%s on %x", a.Alarm, a.MemberID))
			}
			if len(r.Alarms) > 0 {
				healthy = false
				errs = append(errs, "active alarm(s)")
			}
		}
	}
	r.Healthy = healthy
	if len(errs) > 0 {
		r.Error = fmt.Sprint(errs)
	}
}

// summarize computes lags and the verdict from probed rows.
func summarize(rows []MemberStatus) Report {
	var leaderIndex uint64
	for _, r := range rows {
		if r.Leader {
			leaderIndex = r.RaftIndex
		}
	}
	rep := Report{}
	alarms := map[string]bool{}
	for i := range rows {
		r := &rows[i]
		if r.Reachable && leaderIndex > r.RaftIndex {
			r.Lag = leaderIndex - r.RaftIndex
		}
		for _, a := range r.Alarms {
			alarms[a] = true
		}
		if r.Learner {
			continue
		}
		rep.Voters++
		if r.Healthy {
			rep.HealthyVoters++
		}
		if r.Healthy || r.Serving {
			rep.ServingVoters++
		}
	}
	for a := range alarms {
		rep.Alarms = append(rep.Alarms, a)
	}
	sort.Strings(rep.Alarms)
	rep.Members = rows
	rep.Quorum = Quorum(rep.Voters)
	rep.FaultTolerance = rep.ServingVoters - rep.Quorum
	rep.FaultTolerant = rep.FaultTolerance >= 1 && len(rep.Alarms) == 0
	allHealthy := !slices.ContainsFunc(rows, func(r MemberStatus) bool { return !r.Healthy })
	switch {
	case rep.ServingVoters < rep.Quorum || rep.Voters == 0:
		rep.Verdict = VerdictNoQuorum
		rep.FaultTolerant = false
	case !rep.FaultTolerant:
		rep.Verdict = VerdictNoFaultTolerance
	case allHealthy:
		rep.Verdict = VerdictHealthy
	default:
		rep.Verdict = VerdictDegraded
	}
	return rep
}
