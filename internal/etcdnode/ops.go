package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Ops carries out membership changes on a running cluster, each one checked
// against a fresh probe of every member first.
type Ops struct {
	// Client reaches the cluster (any of its members).
	Client *clientv3.Client
	// Prober and Targets probe the members before each change.
	Prober  *Prober
	Targets []Target
	Log     *slog.Logger
}

func (o *Ops) log() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

// Live probes the cluster and returns its members as the plan sees them,
// nil when no member answered.
func (o *Ops) Live(ctx context.Context) ([]LiveMember, Report) {
	rep := o.Prober.Probe(ctx, o.Targets)
	return rep.Live(), rep
}

// find returns the member called name, or an unstarted one at peerURL.
func find(live []LiveMember, name, peerURL string) (LiveMember, bool) {
	for _, m := range live {
		if (m.Name != "" && m.Name == name) || (peerURL != "" && m.hasPeerURL(peerURL)) {
			return m, true
		}
	}
	return LiveMember{}, false
}

// ErrNoCluster is returned when no member of the cluster answers.
var ErrNoCluster = errors.New("etcdnode: no etcd member answers")

// Remove removes the member called name (or listed with peerURL) when that
// keeps quorum, and refuses otherwise with an error wrapping ErrQuorum.
func (o *Ops) Remove(ctx context.Context, name, peerURL string) (LiveMember, error) {
	live, _ := o.Live(ctx)
	if live == nil {
		return LiveMember{}, ErrNoCluster
	}
	m, ok := find(live, name, peerURL)
	if !ok {
		return LiveMember{}, fmt.Errorf("etcdnode: remove %s: no such member", name)
	}
	if err := CheckRemove(live, m.ID); err != nil {
		return m, err
	}
	if err := o.remove(ctx, m); err != nil {
		return m, err
	}
	return m, nil
}

func (o *Ops) remove(ctx context.Context, m LiveMember) error {
	err := o.retryUnhealthy(ctx, func(ctx context.Context) error {
		_, err := o.Client.MemberRemove(ctx, m.ID)
		return err
	})
	if err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
		return fmt.Errorf("etcdnode: remove member %s: %w", m.label(), err)
	}
	o.log().Info("removed etcd member", "member", m.label())
	return nil
}

// Replace makes room for a rebuilt node called name at peerURL: it removes
// the member's old entry (refusing when that member is healthy, or when the
// removal would lose quorum) and adds the node back as a learner. The node
// then starts with state existing (haplane etcd run does so on its own when
// it finds its learner entry) and is promoted once caught up.
func (o *Ops) Replace(ctx context.Context, name, peerURL string) (removed []LiveMember, added uint64, err error) {
	live, _ := o.Live(ctx)
	if live == nil {
		return nil, 0, ErrNoCluster
	}
	for {
		m, ok := find(live, name, peerURL)
		if !ok {
			break
		}
		if m.Name == "" && m.Learner && !m.Started && slices.Equal(m.PeerURLs, []string{peerURL}) {
			o.log().Info("the replacement learner is already added", "id", fmt.Sprintf("%x", m.ID))
			return removed, m.ID, nil
		}
		if m.Healthy {
			return removed, 0, fmt.Errorf("etcdnode: replace %s: member %s is healthy; stop it (or use remove) before replacing it", name, m.label())
		}
		if live, err = afterRemove(live, m.ID); err != nil {
			return removed, 0, err
		}
		if err := o.remove(ctx, m); err != nil {
			return removed, 0, err
		}
		removed = append(removed, m)
	}
	id, _, err := o.AddLearner(ctx, name, peerURL)
	return removed, id, err
}

// reconfigRetryFor bounds the retries of a membership change the server
// calls unhealthy.
const reconfigRetryFor = 15 * time.Second

// memberCallTimeout bounds one membership call: a call that reached a
// member still starting (one rejoining next to this one) waits for it, and
// is better tried again, on whichever endpoint answers.
const memberCallTimeout = 10 * time.Second

// retryUnhealthy runs op, each attempt within memberCallTimeout, until it
// succeeds, fails otherwise, or reconfigRetryFor passes. With strict
// reconfiguration checks (always on) etcd refuses a membership change with
// ErrUnhealthy until it has been connected to its peers for its health
// interval (5s), as right after a member joined or restarted; that refusal
// is transient, as is an attempt that got no answer in time.
func (o *Ops) retryUnhealthy(ctx context.Context, op func(context.Context) error) error {
	deadline := time.Now().Add(reconfigRetryFor)
	for {
		cctx, cancel := context.WithTimeout(ctx, memberCallTimeout)
		err := op(cctx)
		cancel()
		timedOut := ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded)
		if err == nil || (!errors.Is(err, rpctypes.ErrUnhealthy) && !timedOut) || time.Now().After(deadline) {
			return err
		}
		o.log().Info("etcd did not take the membership change yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// learnerWaitFor bounds how long a join waits for another learner to be
// promoted: etcd admits one learner at a time, so nodes joining together
// (every member rejoining after a recovery) take turns.
const learnerWaitFor = time.Minute

// AddLearner adds a learner at peerURL and returns its ID and the initial
// cluster the new member must start with (state existing).
func (o *Ops) AddLearner(ctx context.Context, name, peerURL string) (uint64, []Peer, error) {
	var resp *clientv3.MemberAddResponse
	deadline := time.Now().Add(learnerWaitFor)
	var err error
	for {
		err = o.retryUnhealthy(ctx, func(ctx context.Context) error {
			var err error
			resp, err = o.Client.MemberAddAsLearner(ctx, []string{peerURL})
			return err
		})
		if errors.Is(err, rpctypes.ErrPeerURLExist) {
			// An earlier attempt that timed out was applied after all:
			// this node's learner entry is there, not started yet.
			if id, peers, ok := o.learnerEntry(ctx, name, peerURL); ok {
				o.log().Info("etcd learner entry found for this node", "name", name, "id", fmt.Sprintf("%x", id))
				return id, peers, nil
			}
		}
		if err == nil || !errors.Is(err, rpctypes.ErrTooManyLearners) || time.Now().After(deadline) {
			break
		}
		o.log().Info("etcd admits one learner at a time: waiting for the other learner's promotion", "name", name)
		select {
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err != nil {
		return 0, nil, fmt.Errorf("etcdnode: add learner %s at %s: %w", name, peerURL, err)
	}
	o.log().Info("added etcd learner", "name", name, "id", fmt.Sprintf("%x", resp.Member.ID), "peer", peerURL)
	return resp.Member.ID, initialCluster(resp.Members, name, peerURL), nil
}

// learnerEntry finds the unstarted learner at peerURL in the member list
// and returns its ID and the initial cluster to start it with.
func (o *Ops) learnerEntry(ctx context.Context, name, peerURL string) (uint64, []Peer, bool) {
	cctx, cancel := context.WithTimeout(ctx, memberCallTimeout)
	defer cancel()
	resp, err := o.Client.MemberList(cctx)
	if err != nil {
		return 0, nil, false
	}
	for _, m := range resp.Members {
		if m.IsLearner && m.Name == "" && slices.Contains(m.PeerURLs, peerURL) {
			return m.ID, initialCluster(resp.Members, name, peerURL), true
		}
	}
	return 0, nil, false
}

// initialCluster turns a member list into --initial-cluster for the member
// self at selfURL joining it. Other members not started yet have no name;
// etcd matches them by peer URL, so any unique name does.
func initialCluster(members []*etcdserverpb.Member, self, selfURL string) []Peer {
	var out []Peer
	for _, m := range members {
		for _, u := range m.PeerURLs {
			name := m.Name
			switch {
			case u == selfURL:
				name = self
			case name == "":
				name = fmt.Sprintf("unstarted-%x", m.ID)
			}
			out = append(out, Peer{Name: name, PeerURL: u})
		}
	}
	return out
}

// InitialClusterFor lists the cluster's members as --initial-cluster for
// the member self at selfURL.
func (o *Ops) InitialClusterFor(ctx context.Context, self, selfURL string) ([]Peer, error) {
	resp, err := o.Client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcdnode: member list: %w", err)
	}
	return initialCluster(resp.Members, self, selfURL), nil
}

// Promote promotes the learner id, retrying every interval while the server
// refuses because the learner has not caught up, until ctx ends. A member
// that is already a voter counts as promoted.
func (o *Ops) Promote(ctx context.Context, id uint64, interval time.Duration) error {
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := o.Client.MemberPromote(cctx, id)
		cancel()
		switch {
		case err == nil:
			o.log().Info("promoted etcd learner to voting member", "id", fmt.Sprintf("%x", id))
			return nil
		case errors.Is(err, rpctypes.ErrMemberNotLearner):
			return nil
		case errors.Is(err, rpctypes.ErrMemberNotFound):
			return fmt.Errorf("etcdnode: promote %x: %w", id, err)
		}
		o.log().Debug("learner not ready for promotion yet", "id", fmt.Sprintf("%x", id), "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcdnode: promote %x: %w (last refusal: %v)", id, ctx.Err(), err)
		case <-t.C:
		}
	}
}
