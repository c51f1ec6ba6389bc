package agent

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/config"
)

// TestBGPConfigFromCluster: the cluster file's vip.bgp becomes each node's
// announcer configuration, the router ID defaulting to the node's address.
func TestBGPConfigFromCluster(t *testing.T) {
	file := `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: lab
controlPlaneEndpoint:
  vip: 10.77.0.100
vip:
  mode: bgp
  bgp:
    localASN: 4200000000
    communities: ["64512:100"]
    peers:
      - {address: 10.77.9.1, asn: 64513, password: pw, port: 1179}
nodes:
  - {name: cp1, address: 10.77.0.11}
  - {name: cp2, address: 10.77.0.12}
`
	c, err := config.Parse("haplane.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := BGPConfigFromCluster(c, "cp2")
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Peers[0]
	switch {
	case cfg.VIP != netip.MustParseAddr("10.77.0.100"), cfg.LocalASN != 4200000000, cfg.RouterID != netip.MustParseAddr("10.77.0.12"):
		t.Errorf("identity: %+v", cfg)
	case cfg.HoldTime != 3*time.Second || cfg.Keepalive != time.Second:
		t.Errorf("timers: %s %s", cfg.HoldTime, cfg.Keepalive)
	case len(cfg.Peers) != 1 || p.Address != netip.MustParseAddr("10.77.9.1") || p.ASN != 64513 || p.Password != "pw" || p.Port != 1179:
		t.Errorf("peers: %+v", cfg.Peers)
	case len(cfg.Communities) != 1 || cfg.Communities[0] != 64512<<16|100:
		t.Errorf("communities: %v", cfg.Communities)
	}
	if _, err := BGPConfigFromCluster(c, "cp9"); err == nil || !strings.Contains(err.Error(), "cp9") {
		t.Errorf("unknown node: %v", err)
	}
}
