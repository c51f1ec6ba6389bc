package etcdnode

import "testing"

func TestPickTransferee(t *testing.T) {
	m := func(name string, healthy, learner bool, lag uint64) MemberStatus {
		return MemberStatus{Name: name, ID: "1", Healthy: healthy, Learner: learner, Lag: lag}
	}
	for _, tc := range []struct {
		name    string
		members []MemberStatus
		want    string // "" none
	}{
		{"least behind", []MemberStatus{m("a", true, false, 0), m("b", true, false, 5), m("c", true, false, 2)}, "c"},
		{"tie by name", []MemberStatus{m("a", true, false, 0), m("c", true, false, 1), m("b", true, false, 1)}, "b"},
		{"skips unhealthy and learners", []MemberStatus{m("a", true, false, 0), m("b", false, false, 0), m("c", true, true, 0), m("d", true, false, 9)}, "d"},
		{"none left", []MemberStatus{m("a", true, false, 0), m("b", false, false, 0)}, ""},
		{"not in the member list", []MemberStatus{m("a", true, false, 0), {Name: "b", Healthy: true}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PickTransferee(tc.members, "a")
			if ok != (tc.want != "") || got.Name != tc.want {
				t.Fatalf("got %q %v, want %q", got.Name, ok, tc.want)
			}
		})
	}
}
