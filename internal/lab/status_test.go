package lab

import "testing"

func TestViewSettled(t *testing.T) {
	host := func(name, state string, prio int, backends string) HostView {
		return HostView{Host: name, Agent: "up", State: state, Priority: prio, HoldsVIP: state == "master", Backends: backends}
	}
	etcd := func(h HostView, state string) HostView { h.Etcd = state; return h }
	tests := []struct {
		name  string
		owner string
		hosts []HostView
		want  bool
	}{
		{"top holds it", "cp1", []HostView{host("cp1", "master", 250, "3/3"), host("cp2", "backup", 249, "3/3")}, true},
		// cp1's apiserver came up last: cp2 took the VIP first and cp1
		// preempts an advertisement later.
		{"lower holds it", "cp2", []HostView{host("cp1", "backup", 250, "3/3"), host("cp2", "master", 249, "3/3")}, false},
		// cp1 lost its tracked checks: its effective priority is lower.
		{"top lowered by a track", "cp2", []HostView{host("cp1", "backup", 200, "3/3"), host("cp2", "master", 249, "3/3")}, true},
		{"nobody", "nobody", []HostView{host("cp1", "backup", 250, "3/3")}, false},
		{"two holders", "cp1+cp2", []HostView{host("cp1", "master", 250, "3/3"), host("cp2", "master", 249, "3/3")}, false},
		{"backend down", "cp1", []HostView{host("cp1", "master", 250, "2/3")}, false},
		{"agent down", "cp1", []HostView{host("cp1", "master", 250, "3/3"), {Host: "cp2", Agent: "down"}}, false},
		{"classic", "cp2", []HostView{{Host: "cp1", Agent: "classic"}, {Host: "cp2", Agent: "classic", HoldsVIP: true}}, true},
		// etcd members of their own (no agent reports them): the column
		// comes from etcd status.
		{"etcd leader and follower ready", "cp1", []HostView{etcd(host("cp1", "master", 250, "3/3"), "ready (leader)"), etcd(host("cp2", "backup", 249, "3/3"), "ready")}, true},
		{"etcd member down", "cp1", []HostView{etcd(host("cp1", "master", 250, "3/3"), "ready (leader)"), etcd(host("cp2", "backup", 249, "3/3"), "down")}, false},
		{"etcd learner", "cp1", []HostView{etcd(host("cp1", "master", 250, "3/3"), "ready (leader)"), etcd(host("cp2", "backup", 249, "3/3"), "learner")}, false},
		{"classic with an unhealthy member", "cp2", []HostView{{Host: "cp1", Agent: "classic", Etcd: "unhealthy"}, {Host: "cp2", Agent: "classic", HoldsVIP: true, Etcd: "ready"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := View{VIPOwner: tt.owner, Hosts: tt.hosts}
			if got := v.Settled(); got != tt.want {
				t.Errorf("Settled() = %v, want %v", got, tt.want)
			}
		})
	}
}
