package etcdnode

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrQuorum is wrapped by every refusal of a step that would lose quorum.
var ErrQuorum = errors.New("would lose quorum")

// LiveMember is a member of the running cluster as the plan sees it: the
// member list merged with a health probe of each member.
type LiveMember struct {
	ID       uint64   `json:"id"`
	Name     string   `json:"name"` // empty until the member has started once
	PeerURLs []string `json:"peerURLs"`
	Learner  bool     `json:"learner"`
	Healthy  bool     `json:"healthy"`
	// Started: the member has run at least once (it published its client
	// URLs). A member of a new cluster that never started is a bootstrap
	// slot, not a stale entry.
	Started bool `json:"started"`
}

func (m LiveMember) hasPeerURL(u string) bool { return slices.Contains(m.PeerURLs, u) }

func (m LiveMember) label() string {
	name := m.Name
	if name == "" {
		name = "(unstarted)"
	}
	return fmt.Sprintf("%s %x %s", name, m.ID, strings.Join(m.PeerURLs, ","))
}

// Quorum is the number of voting members a raft cluster of n voters needs
// to commit: a strict majority.
func Quorum(voters int) int { return voters/2 + 1 }

// Action is what a node does to enter the cluster.
type Action string

const (
	// ActionRestart: the data dir holds a member; start it as it is.
	ActionRestart Action = "restart"
	// ActionBootstrap: no cluster runs yet; start a new one from the
	// members of the cluster file.
	ActionBootstrap Action = "bootstrap"
	// ActionJoin: a cluster runs; remove Remove (stale entries of this
	// node), add this node as a learner unless it is already listed as one
	// (AddLearner false), start with state existing, then promote.
	ActionJoin Action = "join"
)

// Plan is the outcome of Decide.
type Plan struct {
	Action Action `json:"action"`
	// Remove are stale members to remove first, in order.
	Remove []LiveMember `json:"remove,omitempty"`
	// AddLearner asks to add this node as a learner before starting.
	AddLearner bool `json:"addLearner,omitempty"`
	// InitialCluster and State are what to start the member with. For a
	// join they are filled in after the learner was added (the member list
	// the server returns); Decide leaves InitialCluster empty then.
	InitialCluster []Peer `json:"initialCluster,omitempty"`
	State          string `json:"state"`
	Reason         string `json:"reason"`
}

// PlanInput is everything Decide looks at.
type PlanInput struct {
	// Self is this node, with the peer URL it will advertise.
	Self Peer
	// Desired are the members of the cluster file.
	Desired []Peer
	// HasData reports a member already in this node's data dir.
	HasData bool
	// Live is the running cluster's member list with health, or nil when
	// no member of the cluster answered.
	Live []LiveMember
}

// Decide works out how this node enters the cluster. It is pure: the
// caller lists members and probes health, and carries the plan out.
//
//   - A data dir with a member restarts as is, unless the running cluster
//     no longer lists this node (it was removed: its data is stale and must
//     be moved away by the operator, never silently deleted).
//   - With no data and no running cluster, bootstrap from the cluster file.
//   - With no data and a cluster bootstrapped with this node as a member
//     that never started (other members came up first), start as new.
//   - With no data and a running cluster, every entry with this node's name
//     or peer URL is stale (the node lost its data, or a join broke off),
//     except an unstarted learner at this node's peer URL, which is the
//     half-done join to finish. Stale entries are removed one at a time,
//     each checked against quorum, and a healthy one is never removed: a
//     healthy member with this name means two hosts claim one identity.
func Decide(in PlanInput) (Plan, error) {
	if !slices.ContainsFunc(in.Desired, func(p Peer) bool { return p.Name == in.Self.Name }) {
		return Plan{}, fmt.Errorf("etcdnode: plan: %s is not an etcd member in the cluster file", in.Self.Name)
	}
	if in.HasData {
		if in.Live != nil && !slices.ContainsFunc(in.Live, func(m LiveMember) bool { return m.hasPeerURL(in.Self.PeerURL) }) {
			return Plan{}, fmt.Errorf("etcdnode: plan: the data dir holds member %s but the running cluster no longer lists %s; move the data dir away so the node joins afresh", in.Self.Name, in.Self.PeerURL)
		}
		return Plan{Action: ActionRestart, State: StateExisting, Reason: "data dir holds a member"}, nil
	}
	if in.Live == nil {
		return Plan{Action: ActionBootstrap, State: StateNew, InitialCluster: slices.Clone(in.Desired),
			Reason: "no member of the cluster answers: bootstrap from the cluster file"}, nil
	}

	p := Plan{Action: ActionJoin, State: StateExisting, AddLearner: true}
	live := slices.Clone(in.Live)
	var reasons []string
	for _, m := range in.Live {
		sameName := m.Name != "" && m.Name == in.Self.Name
		sameURL := m.hasPeerURL(in.Self.PeerURL)
		if !sameName && !sameURL {
			continue
		}
		if sameName && sameURL && !m.Started && !m.Learner {
			// Our slot in a cluster bootstrapped from the cluster file that
			// we have not started yet: the other members wait for us.
			return Plan{Action: ActionBootstrap, State: StateNew, InitialCluster: slices.Clone(in.Desired),
				Reason: "the cluster was bootstrapped with this member, which never started: start as a new member"}, nil
		}
		if m.Name == "" && m.Learner && sameURL && len(m.PeerURLs) == 1 && p.AddLearner {
			p.AddLearner = false
			reasons = append(reasons, fmt.Sprintf("finish the join of learner %x", m.ID))
			continue
		}
		if m.Healthy {
			return Plan{}, fmt.Errorf("etcdnode: plan: member %s is healthy and claims this node's name or peer URL; refusing to replace a live member (is another host configured as %s?)", m.label(), in.Self.Name)
		}
		var err error
		if live, err = afterRemove(live, m.ID); err != nil {
			return Plan{}, err
		}
		p.Remove = append(p.Remove, m)
		reasons = append(reasons, "remove stale "+m.label())
	}
	if p.AddLearner {
		reasons = append(reasons, "add as learner")
	}
	reasons = append(reasons, "start with state existing, promote when caught up")
	p.Reason = strings.Join(reasons, "; ")
	return p, nil
}

// CheckRemove says whether removing the member id from live keeps quorum:
// after the removal, the healthy voting members must still be a quorum of
// the voting members (learners do not vote and never count). It also
// refuses to remove the last voting member.
func CheckRemove(live []LiveMember, id uint64) error {
	_, err := afterRemove(live, id)
	return err
}

func afterRemove(live []LiveMember, id uint64) ([]LiveMember, error) {
	i := slices.IndexFunc(live, func(m LiveMember) bool { return m.ID == id })
	if i < 0 {
		return nil, fmt.Errorf("etcdnode: member %x is not in the cluster", id)
	}
	target := live[i]
	rest := slices.Delete(slices.Clone(live), i, i+1)
	if target.Learner {
		return rest, nil // learners do not vote: removing one never touches quorum
	}
	voters, healthy := Voters(rest)
	if voters == 0 {
		return nil, fmt.Errorf("etcdnode: refusing to remove %s: it is the last voting member: %w", target.label(), ErrQuorum)
	}
	if healthy < Quorum(voters) {
		_, nowHealthy := Voters(live)
		return nil, fmt.Errorf("etcdnode: refusing to remove %s: %d of %d voting members are healthy now, and after the removal %d healthy of %d voting members would be fewer than the quorum of %d: %w",
			target.label(), nowHealthy, voters+1, healthy, voters, Quorum(voters), ErrQuorum)
	}
	return rest, nil
}

// Voters counts the voting members of live and the healthy ones among them.
func Voters(live []LiveMember) (voters, healthy int) {
	for _, m := range live {
		if m.Learner {
			continue
		}
		voters++
		if m.Healthy {
			healthy++
		}
	}
	return voters, healthy
}
