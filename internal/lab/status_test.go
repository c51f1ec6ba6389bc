package lab

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/haplane/haplane/internal/bgp"
)

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
		// External etcd hosts running their member alone (haplane etcd
		// run): no agent to ask, only the member counts.
		{"lone etcd hosts ready", "cp1", []HostView{host("cp1", "master", 250, "3/3"), {Host: "etcd1", Agent: "-", Etcd: "ready (leader)"}, {Host: "etcd2", Agent: "-", Etcd: "ready"}}, true},
		{"lone etcd host down", "cp1", []HostView{host("cp1", "master", 250, "3/3"), {Host: "etcd1", Agent: "-", Etcd: "ready (leader)"}, {Host: "etcd2", Agent: "-", Etcd: "down"}}, false},
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

// TestWriteStatusBGP: in vip.mode bgp the table shows each node's route
// and sessions where VRRP's state and priority stand.
func TestWriteStatusBGP(t *testing.T) {
	peer := func(state, bfd string) []bgp.PeerState {
		return []bgp.PeerState{{Address: "10.77.0.1", ASN: 64513, State: state, BFD: bfd}}
	}
	v := View{Endpoint: "https://10.77.0.100:8443", VIPMode: VIPModeBGP, VIPOwner: "cp1", Hosts: []HostView{
		{Host: "cp1", Role: "control-plane", Agent: "up", HoldsVIP: true, BGP: &bgp.State{Announced: true, Healthy: true, Peers: peer("established", "up")}},
		{Host: "cp2", Role: "control-plane", Agent: "up", BGP: &bgp.State{Healthy: true, Paused: true, Peers: peer("established", "up")}},
		{Host: "cp3", Role: "control-plane", Agent: "up", BGP: &bgp.State{Peers: peer("active", "down")}},
		{Host: "cp4", Role: "control-plane", Agent: "down"},
		{Host: "cp5", Role: "control-plane", Agent: "up", BGP: &bgp.State{Announced: true, Healthy: true, Panic: true, Peers: peer("established", "up")}},
		{Host: "cp6", Role: "control-plane", Agent: "up", BGP: &bgp.State{Healthy: true, Panic: true, Peers: peer("established", "up")}},
	}}
	var b strings.Builder
	if err := WriteStatus(&b, v); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	var rows []string // each line, its padding collapsed
	for _, l := range strings.Split(out, "\n") {
		rows = append(rows, strings.Join(strings.Fields(l), " "))
	}
	for _, want := range []string{
		"HOST ADDRESS ROLE AGENT BGP ROUTE PEERS VIP BACKENDS UP ETCD",
		"cp1 control-plane up announced 1/1 up, BFD 1/1 * - -",
		"cp2 control-plane up withdrawn (maintenance) 1/1 up, BFD 1/1 - -",
		"cp3 control-plane up withdrawn (unhealthy) 0/1 up, BFD 0/1 - -",
		"cp4 control-plane down - - - -",
		"cp5 control-plane up announced (panic) 1/1 up, BFD 1/1 - -",
		"cp6 control-plane up withdrawn (panic: waits for a ready apiserver) 1/1 up, BFD 1/1 - -",
	} {
		if !slices.Contains(rows, want) {
			t.Errorf("status lacks the row %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "VRRP") || strings.Contains(out, "PRIORITY") {
		t.Errorf("BGP status shows VRRP columns:\n%s", out)
	}
}

// TestClusterViewNoAgent: a host whose fetch says it runs no agent shows
// "-" in the AGENT column, not "down".
func TestClusterViewNoAgent(t *testing.T) {
	v := ClusterView("https://10.77.0.100:8443", 2, func(i int) (HostView, []byte, error) {
		if i == 0 {
			return HostView{Host: "etcd1", Role: "etcd"}, nil, errNoAgent
		}
		return HostView{Host: "cp1", Role: "control-plane"}, nil, errors.New("connection refused")
	})
	if got := []string{v.Hosts[0].Agent, v.Hosts[1].Agent}; !slices.Equal(got, []string{"-", "down"}) {
		t.Errorf("AGENT column %v, want [- down]", got)
	}
}
