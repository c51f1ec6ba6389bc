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
