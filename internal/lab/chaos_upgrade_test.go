package lab

import (
	"slices"
	"testing"
)

// TestUpgradeOrder: the VIP holder goes last, the others in host order;
// hosts that are not control-plane nodes are left alone.
func TestUpgradeOrder(t *testing.T) {
	st := &State{Hosts: []HostState{{Name: "cp1", Role: "control-plane"}, {Name: "cp2", Role: "control-plane"},
		{Name: "etcd1", Role: "etcd"}, {Name: "cp3", Role: "control-plane"}, {Name: "client", Role: "client"}}}
	for _, tc := range []struct {
		holder string
		want   []string
		err    bool
	}{
		{"cp1", []string{"cp2", "cp3", "cp1"}, false},
		{"cp2", []string{"cp1", "cp3", "cp2"}, false},
		{"cp3", []string{"cp1", "cp2", "cp3"}, false},
		{"nobody", nil, true},
		{"cp1+cp2", nil, true},
	} {
		r := &chaosRun{st: st, env: ChaosEnv{Holder: func() string { return tc.holder }}}
		got, err := r.upgradeOrder()
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("holder %s: order %v, err %v; want %v (error %v)", tc.holder, got, err, tc.want, tc.err)
		}
	}
}
