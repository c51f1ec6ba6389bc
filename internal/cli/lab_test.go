package cli

import "testing"

func TestLabViewSettled(t *testing.T) {
	host := func(name, state string, prio int, backends string) labHostView {
		return labHostView{Host: name, Agent: "up", State: state, Priority: prio, HoldsVIP: state == "master", Backends: backends}
	}
	tests := []struct {
		name  string
		owner string
		hosts []labHostView
		want  bool
	}{
		{"top holds it", "cp1", []labHostView{host("cp1", "master", 250, "3/3"), host("cp2", "backup", 249, "3/3")}, true},
		// cp1's apiserver came up last: cp2 took the VIP first and cp1
		// preempts an advertisement later.
		{"lower holds it", "cp2", []labHostView{host("cp1", "backup", 250, "3/3"), host("cp2", "master", 249, "3/3")}, false},
		// cp1 lost its tracked checks: its effective priority is lower.
		{"top lowered by a track", "cp2", []labHostView{host("cp1", "backup", 200, "3/3"), host("cp2", "master", 249, "3/3")}, true},
		{"nobody", "nobody", []labHostView{host("cp1", "backup", 250, "3/3")}, false},
		{"two holders", "cp1+cp2", []labHostView{host("cp1", "master", 250, "3/3"), host("cp2", "master", 249, "3/3")}, false},
		{"backend down", "cp1", []labHostView{host("cp1", "master", 250, "2/3")}, false},
		{"agent down", "cp1", []labHostView{host("cp1", "master", 250, "3/3"), {Host: "cp2", Agent: "down"}}, false},
		{"classic", "cp2", []labHostView{{Host: "cp1", Agent: "classic"}, {Host: "cp2", Agent: "classic", HoldsVIP: true}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := labView{VIPOwner: tt.owner, Hosts: tt.hosts}
			if got := v.settled(); got != tt.want {
				t.Errorf("settled() = %v, want %v", got, tt.want)
			}
		})
	}
}
