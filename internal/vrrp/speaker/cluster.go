package speaker

import (
	"fmt"
	"net/netip"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/vrrp"
)

// FromCluster derives the speaker configuration of node nodeName from a
// validated, defaulted cluster file, and returns the link the VIP lives on.
// Tracks, Logger and Metrics are left for the caller.
func FromCluster(c *config.Cluster, nodeName string) (Config, string, error) {
	n, ok := c.NodeByName(nodeName)
	if !ok {
		return Config{}, "", fmt.Errorf("speaker: node %q is not in the cluster file", nodeName)
	}
	primary := n.Addr()
	vip := c.VIPAddr()
	if !primary.IsValid() || !vip.IsValid() {
		return Config{}, "", fmt.Errorf("speaker: node %q address %q or VIP %q is not an IP address", nodeName, n.Address, c.ControlPlaneEndpoint.VIP)
	}
	v := c.VIP
	vc := vrrp.Config{
		Version:        v.Version,
		VRID:           uint8(v.VirtualRouterID),
		Priority:       uint8(n.Priority),
		AdvertInterval: v.AdvertInterval.Duration,
		Preempt:        v.PreemptEnabled(),
		PreemptDelay:   v.PreemptDelay.Duration,
		Primary:        primary,
		Addrs:          []netip.Addr{vip},
	}
	if v.VirtualRouterID < 1 || v.VirtualRouterID > 255 || n.Priority < 1 || n.Priority > 255 {
		return Config{}, "", fmt.Errorf("speaker: vrid %d / priority %d out of range", v.VirtualRouterID, n.Priority)
	}
	if v.Auth != nil && v.Version == 2 {
		pw, err := vrrp.Password(v.Auth.Password)
		if err != nil {
			return Config{}, "", err
		}
		vc.AuthType, vc.AuthData = vrrp.AuthSimple, pw
	}
	cfg := Config{VRRP: vc, AddressLifetime: v.AddressLifetime.Duration}
	if v.Unicast {
		for _, o := range c.Nodes {
			if o.Name != n.Name {
				cfg.Peers = append(cfg.Peers, o.Addr())
			}
		}
	}
	return cfg, c.InterfaceFor(n), nil
}
