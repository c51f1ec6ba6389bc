package config

import (
	"fmt"
	"strings"
)

// Summary is what `haplane validate` reports of a valid cluster file.
type Summary struct {
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	Nodes    int    `json:"nodes"`
	Topology string `json:"etcdTopology"`
	VIPMode  string `json:"vipMode"`
	// VRRP is set in mode vrrp, BGP in mode bgp.
	VRRP string      `json:"vrrp,omitempty"`
	BGP  *BGPSummary `json:"bgp,omitempty"`
}

// BGPSummary is vip.bgp as the summary shows it. A peer's password is
// never shown: MD5 only says there is one.
type BGPSummary struct {
	LocalASN uint32 `json:"localASN"`
	// RouterID is vip.bgp.routerID; empty: each node's address.
	RouterID    string           `json:"routerID,omitempty"`
	HoldTime    string           `json:"holdTime"`
	Keepalive   string           `json:"keepaliveInterval"`
	Communities []string         `json:"communities,omitempty"`
	Peers       []BGPPeerSummary `json:"peers"`
}

// BGPPeerSummary is one router of the summary.
type BGPPeerSummary struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	Port    int    `json:"port"`
	BFD     bool   `json:"bfd"`
	MD5     bool   `json:"md5"`
}

// Summarize is c's summary.
func (c *Cluster) Summarize() Summary {
	s := Summary{
		Name:     c.Name,
		Endpoint: fmt.Sprintf("%s:%d", c.EndpointHost(), c.ControlPlaneEndpoint.Port),
		Nodes:    len(c.Nodes),
		Topology: c.Etcd.Topology,
		VIPMode:  c.VIP.Mode,
	}
	b := c.VIP.BGP
	if !c.VIP.BGPMode() || b == nil {
		s.VRRP = fmt.Sprintf("v%d vrid %d every %s on %s", c.VIP.Version, c.VIP.VirtualRouterID, c.VIP.AdvertInterval.Duration, c.VIP.Interface)
		return s
	}
	s.BGP = &BGPSummary{LocalASN: b.LocalASN, RouterID: b.RouterID, HoldTime: b.HoldTime.Duration.String(),
		Keepalive: b.KeepaliveInterval.Duration.String(), Communities: b.Communities}
	for _, p := range b.Peers {
		s.BGP.Peers = append(s.BGP.Peers, BGPPeerSummary{Address: p.Address, ASN: p.ASN, Port: p.Port, BFD: p.BFD, MD5: p.Password != ""})
	}
	return s
}

// String is the summary's line: `cluster "lab", endpoint ..., VRRP v3
// vrid 51 ...` or `..., BGP as 64512 to 10.77.0.1 (as 64513, BFD), hold 3s,
// keepalive 1s`.
func (s Summary) String() string {
	head := fmt.Sprintf("cluster %q, endpoint %s, %d control-plane node(s), %s etcd", s.Name, s.Endpoint, s.Nodes, s.Topology)
	if s.BGP == nil {
		return head + ", VRRP " + s.VRRP
	}
	b := s.BGP
	var peers []string
	for _, p := range b.Peers {
		opts := []string{fmt.Sprintf("as %d", p.ASN)}
		if p.Port != DefaultBGPPeerPort {
			opts = append(opts, fmt.Sprintf("port %d", p.Port))
		}
		if p.BFD {
			opts = append(opts, "BFD")
		}
		if p.MD5 {
			opts = append(opts, "MD5")
		}
		peers = append(peers, fmt.Sprintf("%s (%s)", p.Address, strings.Join(opts, ", ")))
	}
	out := fmt.Sprintf("%s, BGP as %d to %s, hold %s, keepalive %s", head, b.LocalASN, strings.Join(peers, " and "), b.HoldTime, b.Keepalive)
	if b.RouterID != "" {
		out += ", router ID " + b.RouterID
	}
	if len(b.Communities) > 0 {
		out += ", communities " + strings.Join(b.Communities, " ")
	}
	return out
}
