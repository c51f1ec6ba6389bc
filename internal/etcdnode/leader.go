package etcdnode

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// LeaderMove is what MoveLeaderAway did.
type LeaderMove struct {
	// Led: the member named self was the leader when asked.
	Led bool `json:"led"`
	// From and To name the leader before and after ("" when unknown).
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// PickTransferee is the pure choice of the member to hand the leadership
// to: a healthy voting member other than self, the one least behind the
// leader (the one that catches up soonest), by name on ties so the choice
// is stable. ok is false when there is none.
func PickTransferee(members []MemberStatus, self string) (MemberStatus, bool) {
	var best MemberStatus
	ok := false
	for _, m := range members {
		if m.Name == self || m.Learner || !m.Healthy || m.ID == "" {
			continue
		}
		if !ok || m.Lag < best.Lag || m.Lag == best.Lag && m.Name < best.Name {
			best, ok = m, true
		}
	}
	return best, ok
}

// MoveLeaderAway hands the raft leadership from the member named self to
// another healthy voting member (PickTransferee), when self leads; then it
// waits, within ctx, until the cluster reports the new leader. It does
// nothing when self does not lead. The request goes to the leader's own
// client URL: etcd accepts MoveLeader only there.
func MoveLeaderAway(ctx context.Context, p *Prober, tc *tls.Config, targets []Target, self string) (LeaderMove, error) {
	r := p.Probe(ctx, targets)
	var mv LeaderMove
	var lead MemberStatus
	for _, m := range r.Members {
		if m.Leader {
			lead = m
		}
	}
	mv.From = lead.Name
	if lead.Name == "" {
		return mv, errors.New("etcdnode: move leader: no member reports itself the leader")
	}
	if lead.Name != self {
		mv.To = lead.Name
		return mv, nil
	}
	mv.Led = true
	to, ok := PickTransferee(r.Members, self)
	if !ok {
		return mv, fmt.Errorf("etcdnode: move leader away from %s: no other healthy voting member", self)
	}
	var id uint64
	if _, err := fmt.Sscanf(to.ID, "%x", &id); err != nil {
		return mv, fmt.Errorf("etcdnode: move leader: member %s has ID %q: %w", to.Name, to.ID, err)
	}
	c, err := NewClient([]string{lead.Endpoint}, tc, 0)
	if err != nil {
		return mv, err
	}
	defer c.Close()
	if _, err := c.MoveLeader(ctx, id); err != nil {
		return mv, fmt.Errorf("etcdnode: move leader from %s to %s: %w", self, to.Name, err)
	}
	// MoveLeader returns once the transfer is committed, yet members learn
	// the new leader at their next heartbeat: wait until they report it.
	for {
		r := p.Probe(ctx, targets)
		for _, m := range r.Members {
			if m.Leader && m.Name != self {
				mv.To = m.Name
				return mv, nil
			}
		}
		select {
		case <-ctx.Done():
			return mv, fmt.Errorf("etcdnode: move leader from %s to %s: no new leader reported: %w", self, to.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
