package lab

import (
	"strings"
	"testing"

	"github.com/haplane/haplane/internal/config"
)

// TestBGPClusterFile: lab up --vip-mode bgp writes a cluster file in mode
// bgp whose nodes peer with the router host, and BIRD peers with each node.
func TestBGPClusterFile(t *testing.T) {
	o := Options{Dir: t.TempDir(), Nodes: 3, VIPMode: VIPModeBGP, Binary: "/bin/true"}
	if err := o.setDefaults(); err != nil && !strings.Contains(err.Error(), "bird") {
		t.Fatal(err)
	}
	if o.VIPLB != VIPLBHaplaneBGP {
		t.Errorf("stack = %q, want %q", o.VIPLB, VIPLBHaplaneBGP)
	}
	c, err := config.Parse("haplane.yaml", ClusterFile(o))
	if err != nil {
		t.Fatal(err)
	}
	if !c.VIP.BGPMode() || c.VIP.BGP.Peers[0].Address != RouterAddr.String() || !c.VIP.BGP.Peers[0].BFD {
		t.Fatalf("vip = %+v", c.VIP)
	}
	conf := string(birdConfig(c))
	for _, want := range []string{
		"protocol bgp cp1 from node { neighbor 10.77.0.11 as 64512; }",
		"protocol bgp cp3 from node { neighbor 10.77.0.13 as 64512; }",
		"merge paths on", "bfd on", "local 10.77.0.1 as 64513",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("bird.conf lacks %q:\n%s", want, conf)
		}
	}
	bad := Options{Dir: t.TempDir(), VIPMode: VIPModeBGP, VIPLB: VIPLBClassic, Binary: "/bin/true"}
	if err := bad.setDefaults(); err == nil || !strings.Contains(err.Error(), "--vip-mode bgp needs --vip-lb haplane") {
		t.Errorf("classic with bgp: %v", err)
	}
}

// TestBGPHolder: the holder of a BGP lab is every node whose agent's
// /status says its route is announced, read from the agent's own answer.
func TestBGPHolder(t *testing.T) {
	const announced = `{"agent":{"node":"cp2"},"ready":true,"parts":{"bgp":{"route":"10.77.0.100/32","announced":true,"healthy":true,"stopping":false,"peers":[{"address":"10.77.0.1","asn":64513,"state":"established","bfd":"up"}]},"lb":{"backends":[]}}}`
	const withdrawn = `{"parts":{"bgp":{"route":"10.77.0.100/32","announced":false,"healthy":true,"stopping":true,"peers":[]}}}`
	for _, tc := range []struct {
		name   string
		status string
		want   *bool
	}{
		{"announced", announced, ptr(true)},
		{"withdrawn while stopping", withdrawn, ptr(false)},
		{"no bgp part (vrrp agent)", `{"parts":{"vip":{"state":"master"}}}`, nil},
		{"agent down", "", nil},
		{"not json", "haplane: status: no agent answers", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bgpPart([]byte(tc.status))
			switch {
			case tc.want == nil && b != nil:
				t.Errorf("bgpPart = %+v, want none", b)
			case tc.want != nil && b == nil:
				t.Errorf("bgpPart = nil, want announced %v", *tc.want)
			case tc.want != nil && b.Announced != *tc.want:
				t.Errorf("announced = %v, want %v", b.Announced, *tc.want)
			}
		})
	}
	for _, tc := range []struct {
		holders []string
		want    string
	}{
		{nil, "nobody"},
		{[]string{"cp2"}, "cp2"},
		{[]string{"cp1", "cp2", "cp3"}, "cp1+cp2+cp3"},
	} {
		if got := holderName(tc.holders); got != tc.want {
			t.Errorf("holderName(%v) = %q, want %q", tc.holders, got, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
