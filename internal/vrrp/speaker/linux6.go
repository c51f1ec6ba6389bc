//go:build linux

package speaker

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/haplane/haplane/internal/vrrp"
)

// Listen opens the VRRP socket for the address family of cfg's router on
// ifname. Over IPv6 the router's primary address is the link's link-local
// address (RFC 5798 §5.1.2.1: adverts are sent from it, and ties are broken
// on it), so Listen sets cfg.VRRP.Primary to it.
func Listen(ifname string, cfg *Config) (Conn, error) {
	if cfg.VRRP.Primary.Is4() {
		return ListenIPv4(ifname, cfg.VRRP.Primary)
	}
	if len(cfg.Peers) > 0 {
		return nil, errors.New("speaker: unicast peers are supported over IPv4 only")
	}
	c, ll, err := ListenIPv6(ifname)
	if err != nil {
		return nil, err
	}
	cfg.VRRP.Primary = ll
	return c, nil
}

// rawConn6 is a Conn over a raw IPv6 socket bound to one interface.
type rawConn6 struct {
	pc      *ipv6.PacketConn
	c       net.PacketConn
	ifindex int
	src     net.IP
}

// ListenIPv6 opens a raw VRRP socket on ifname, joins ff02::12 there and
// sends from the link's link-local address with hop limit 255, which it
// returns.
func ListenIPv6(ifname string) (Conn, netip.Addr, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("speaker: interface %s: %w", ifname, err)
	}
	ll, err := linkLocal(ifi)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	var pc *ipv6.PacketConn
	c, err := listenGroup("ip6", "::", ifi, vrrp.GroupV6, func(c net.PacketConn) groupConn {
		pc = ipv6.NewPacketConn(c)
		return group6{pc}
	})
	if err != nil {
		return nil, netip.Addr{}, err
	}
	return &rawConn6{pc: pc, c: c, ifindex: ifi.Index, src: ll.AsSlice()}, ll, nil
}

// group6 is the IPv6 groupConn.
type group6 struct{ *ipv6.PacketConn }

func (group6) hops() string                   { return "hop limit" }
func (g group6) setMulticastHops(n int) error { return g.SetMulticastHopLimit(n) }
func (g group6) setHops(n int) error          { return g.SetHopLimit(n) }
func (g group6) enableControl() error {
	return g.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface, true)
}

// linkLocal returns ifi's IPv6 link-local address.
func linkLocal(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("speaker: addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Is6() && ip.IsLinkLocalUnicast() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("speaker: %s has no IPv6 link-local address (VRRPv3 over IPv6 sends from it)", ifi.Name)
}

func (r *rawConn6) ReadFrom(b []byte) (int, netip.Addr, netip.Addr, int, error) {
	for {
		n, cm, src, err := r.pc.ReadFrom(b)
		if err != nil {
			return 0, netip.Addr{}, netip.Addr{}, 0, err
		}
		if cm == nil || (cm.IfIndex != 0 && cm.IfIndex != r.ifindex) {
			continue
		}
		ia, ok := src.(*net.IPAddr)
		if !ok {
			continue
		}
		s, _ := netip.AddrFromSlice(ia.IP)
		d, _ := netip.AddrFromSlice(cm.Dst)
		return n, s, d, cm.HopLimit, nil
	}
}

func (r *rawConn6) WriteTo(b []byte, dst netip.Addr, deadline time.Time) error {
	if err := r.pc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	cm := &ipv6.ControlMessage{Src: r.src, IfIndex: r.ifindex, HopLimit: vrrp.TTL}
	_, err := r.pc.WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice()})
	return err
}

func (r *rawConn6) Close() error { return r.c.Close() }
