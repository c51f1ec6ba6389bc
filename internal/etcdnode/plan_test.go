package etcdnode

import (
	"errors"
	"strings"
	"testing"
)

var (
	pA = Peer{"a", "https://10.0.0.1:2380"}
	pB = Peer{"b", "https://10.0.0.2:2380"}
	pC = Peer{"c", "https://10.0.0.3:2380"}
)

func lm(id uint64, p Peer, healthy bool) LiveMember {
	return LiveMember{ID: id, Name: p.Name, PeerURLs: []string{p.PeerURL}, Healthy: healthy, Started: true}
}

func TestDecide(t *testing.T) {
	desired := []Peer{pA, pB, pC}
	unstartedLearnerC := LiveMember{ID: 9, PeerURLs: []string{pC.PeerURL}, Learner: true}
	bootSlotC := LiveMember{ID: 3, Name: "c", PeerURLs: []string{pC.PeerURL}}
	tests := []struct {
		name    string
		in      PlanInput
		action  Action
		remove  []uint64
		add     bool
		state   string
		errWant string
		quorum  bool
	}{
		{name: "fresh cluster bootstraps", in: PlanInput{Self: pC, Desired: desired}, action: ActionBootstrap, state: StateNew},
		{name: "data restarts", in: PlanInput{Self: pC, Desired: desired, HasData: true}, action: ActionRestart, state: StateExisting},
		{name: "data restarts while listed", in: PlanInput{Self: pC, Desired: desired, HasData: true,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true), lm(3, pC, false)}}, action: ActionRestart, state: StateExisting},
		{name: "data of a removed member is refused", in: PlanInput{Self: pC, Desired: desired, HasData: true,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true)}}, errWant: "no longer lists"},
		{name: "late starter of a new cluster bootstraps", in: PlanInput{Self: pC, Desired: desired,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true), bootSlotC}}, action: ActionBootstrap, state: StateNew},
		{name: "new node joins as learner", in: PlanInput{Self: pC, Desired: desired,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true)}}, action: ActionJoin, add: true, state: StateExisting},
		{name: "rebuilt node removes its stale entry", in: PlanInput{Self: pC, Desired: desired,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true), lm(3, pC, false)}}, action: ActionJoin, remove: []uint64{3}, add: true, state: StateExisting},
		{name: "same name on another address is stale too", in: PlanInput{Self: pC, Desired: desired,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true), lm(3, Peer{"c", "https://10.0.0.9:2380"}, false)}}, action: ActionJoin, remove: []uint64{3}, add: true, state: StateExisting},
		{name: "another name on our address is stale", in: PlanInput{Self: pC, Desired: desired,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true), lm(3, Peer{"old", pC.PeerURL}, false)}}, action: ActionJoin, remove: []uint64{3}, add: true, state: StateExisting},
		{name: "half-done join is finished", in: PlanInput{Self: pC, Desired: desired,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true), unstartedLearnerC}}, action: ActionJoin, state: StateExisting},
		{name: "stale entry plus our learner: remove stale, keep learner", in: PlanInput{Self: pC, Desired: desired,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true), lm(3, Peer{"c", "https://10.0.0.9:2380"}, false), unstartedLearnerC}},
			action: ActionJoin, remove: []uint64{3}, state: StateExisting},
		{name: "healthy member with our name is never removed", in: PlanInput{Self: pC, Desired: desired,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, true), lm(3, Peer{"c", "https://10.0.0.9:2380"}, true)}}, errWant: "refusing to replace a live member"},
		{name: "stale removal that loses quorum is refused", in: PlanInput{Self: pC, Desired: desired,
			Live: []LiveMember{lm(1, pA, true), lm(2, pB, false), lm(3, pC, false)}}, quorum: true},
		{name: "node not in the cluster file", in: PlanInput{Self: Peer{"x", "https://10.0.0.8:2380"}, Desired: desired}, errWant: "not an etcd member"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Decide(tt.in)
			if tt.errWant != "" || tt.quorum {
				if err == nil {
					t.Fatalf("plan %+v, want an error", p)
				}
				if tt.quorum && !errors.Is(err, ErrQuorum) {
					t.Fatalf("err %v, want ErrQuorum", err)
				}
				if !strings.Contains(err.Error(), tt.errWant) {
					t.Fatalf("err %v, want it to mention %q", err, tt.errWant)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var removed []uint64
			for _, m := range p.Remove {
				removed = append(removed, m.ID)
			}
			if p.Action != tt.action || p.AddLearner != tt.add || p.State != tt.state || !equalIDs(removed, tt.remove) {
				t.Fatalf("plan %+v; want action %s add %v state %s remove %v", p, tt.action, tt.add, tt.state, tt.remove)
			}
			if p.Action == ActionBootstrap && len(p.InitialCluster) != len(tt.in.Desired) {
				t.Fatalf("bootstrap initial cluster %v", p.InitialCluster)
			}
			if p.Reason == "" {
				t.Error("plan without a reason")
			}
		})
	}
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCheckRemove(t *testing.T) {
	learner := LiveMember{ID: 4, Name: "d", Learner: true}
	tests := []struct {
		name string
		live []LiveMember
		id   uint64
		ok   bool
	}{
		{"healthy 3, remove one", []LiveMember{lm(1, pA, true), lm(2, pB, true), lm(3, pC, true)}, 1, true},
		{"2 of 3, remove the dead one", []LiveMember{lm(1, pA, true), lm(2, pB, true), lm(3, pC, false)}, 3, true},
		{"2 of 3, remove a healthy one", []LiveMember{lm(1, pA, true), lm(2, pB, true), lm(3, pC, false)}, 1, false},
		{"1 of 3, remove a dead one", []LiveMember{lm(1, pA, true), lm(2, pB, false), lm(3, pC, false)}, 3, false},
		{"learners never count", []LiveMember{lm(1, pA, true), lm(2, pB, true), learner}, 4, true},
		{"2 healthy + learner, remove a voter: 1 of 1 left", []LiveMember{lm(1, pA, true), lm(2, pB, true), learner}, 1, true},
		{"last voter", []LiveMember{lm(1, pA, true)}, 1, false},
		{"unknown member", []LiveMember{lm(1, pA, true)}, 7, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckRemove(tt.live, tt.id)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckRemove = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestQuorum(t *testing.T) {
	for voters, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 7: 4} {
		if got := Quorum(voters); got != want {
			t.Errorf("Quorum(%d) = %d, want %d", voters, got, want)
		}
	}
}

func TestSummarize(t *testing.T) {
	h := func(name string, leader bool, idx uint64) MemberStatus {
		return MemberStatus{Name: name, Reachable: true, Healthy: true, Leader: leader, RaftIndex: idx}
	}
	dead := MemberStatus{Name: "c"}
	alarmed := h("c", false, 10)
	alarmed.Healthy, alarmed.Alarms = false, []string{"NOSPACE on 3"}
	// The alarm list is the cluster's: every member reports it, and is
	// unhealthy, yet serving.
	full := func(name string, leader bool) MemberStatus {
		m := h(name, leader, 10)
		m.Healthy, m.Serving, m.Alarms = false, true, []string{"NOSPACE on 1"}
		return m
	}
	tests := []struct {
		name     string
		rows     []MemberStatus
		verdict  string
		tolerant bool
	}{
		{"all healthy", []MemberStatus{h("a", true, 10), h("b", false, 9), h("c", false, 10)}, VerdictHealthy, true},
		{"2 of 3", []MemberStatus{h("a", true, 10), h("b", false, 9), dead}, VerdictNoFaultTolerance, false},
		{"4 of 5", []MemberStatus{h("a", true, 10), h("b", false, 9), h("c", false, 9), h("d", false, 9), dead}, VerdictDegraded, true},
		{"1 of 3", []MemberStatus{h("a", false, 10), dead, dead}, VerdictNoQuorum, false},
		{"alarm", []MemberStatus{h("a", true, 10), h("b", false, 10), alarmed}, VerdictNoFaultTolerance, false},
		{"NOSPACE everywhere", []MemberStatus{full("a", true), full("b", false), full("c", false)}, VerdictNoFaultTolerance, false},
		{"NOSPACE, one dead", []MemberStatus{full("a", true), full("b", false), dead}, VerdictNoFaultTolerance, false},
		{"NOSPACE, two dead", []MemberStatus{full("a", true), dead, dead}, VerdictNoQuorum, false},
		{"single member", []MemberStatus{h("a", true, 10)}, VerdictNoFaultTolerance, false},
		{"nothing", nil, VerdictNoQuorum, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := summarize(tt.rows)
			if rep.Verdict != tt.verdict || rep.FaultTolerant != tt.tolerant {
				t.Fatalf("verdict %s tolerant %v, want %s %v (%+v)", rep.Verdict, rep.FaultTolerant, tt.verdict, tt.tolerant, rep)
			}
		})
	}
	rep := summarize([]MemberStatus{h("a", true, 10), h("b", false, 7)})
	if rep.Members[1].Lag != 3 || rep.Members[0].Lag != 0 {
		t.Errorf("lag: %+v", rep.Members)
	}
}

func TestReportLive(t *testing.T) {
	rows := []MemberStatus{{Name: "a", ID: "1f", Reachable: true, Healthy: true, Started: true, PeerURLs: []string{pA.PeerURL}}, {Name: "b"}}
	rep := summarize(rows)
	if rep.Live() != nil {
		t.Fatal("a report without a member list must not describe membership")
	}
	rep.Listed = true
	live := rep.Live()
	if len(live) != 1 || live[0].ID != 0x1f || !live[0].Healthy || !live[0].Started {
		t.Fatalf("live = %+v", live)
	}
	rep = summarize([]MemberStatus{{Name: "a", ID: "1"}})
	rep.Listed = true
	if rep.Live() != nil {
		t.Fatal("no member reachable: want nil")
	}
}
