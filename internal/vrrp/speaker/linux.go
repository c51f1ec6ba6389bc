//go:build linux

package speaker

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/haplane/haplane/internal/vrrp"
)

// This file and linux6.go are the speaker's own Linux edge: raw IP
// protocol 112 sockets and netlink/ARP/NDP address handling. internal/vrrp/vrrpnet
// and internal/vip are the full edge (IPv6, unicast, per-reason drop
// counters); the speaker takes any Conn and Addrs, so they plug in as they
// land.

// rawConn is a Conn over a raw IPv4 socket bound to one interface.
type rawConn struct {
	pc      *ipv4.PacketConn
	c       net.PacketConn
	ifindex int
	src     net.IP
}

// ListenIPv4 opens a raw VRRP socket on ifname, joins 224.0.0.18 there and
// sends from primary with TTL 255. Multicast loopback is off, so the node
// does not hear itself.
func ListenIPv4(ifname string, primary netip.Addr) (Conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("speaker: interface %s: %w", ifname, err)
	}
	c, err := net.ListenPacket(fmt.Sprintf("ip4:%d", vrrp.IPProto), "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("speaker: open raw VRRP socket: %w", err)
	}
	fail := func(op string, err error) (Conn, error) {
		c.Close()
		return nil, fmt.Errorf("speaker: %s on %s: %w", op, ifname, err)
	}
	if sc, ok := c.(syscall.Conn); ok {
		raw, err := sc.SyscallConn()
		if err != nil {
			return fail("raw conn", err)
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
		}); err != nil {
			return fail("bind to device", err)
		}
		if serr != nil {
			return fail("bind to device", serr)
		}
	}
	pc := ipv4.NewPacketConn(c)
	if err := pc.JoinGroup(ifi, &net.IPAddr{IP: vrrp.GroupV4.AsSlice()}); err != nil {
		return fail("join 224.0.0.18", err)
	}
	if err := pc.SetMulticastInterface(ifi); err != nil {
		return fail("set multicast interface", err)
	}
	if err := pc.SetMulticastTTL(vrrp.TTL); err != nil {
		return fail("set multicast TTL", err)
	}
	if err := pc.SetTTL(vrrp.TTL); err != nil {
		return fail("set TTL", err)
	}
	if err := pc.SetMulticastLoopback(false); err != nil {
		return fail("disable multicast loopback", err)
	}
	if err := pc.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
		return fail("enable control messages", err)
	}
	return &rawConn{pc: pc, c: c, ifindex: ifi.Index, src: primary.AsSlice()}, nil
}

func (r *rawConn) ReadFrom(b []byte) (int, netip.Addr, netip.Addr, int, error) {
	for {
		n, cm, src, err := r.pc.ReadFrom(b)
		if err != nil {
			return 0, netip.Addr{}, netip.Addr{}, 0, err
		}
		if cm == nil {
			continue
		}
		if cm.IfIndex != 0 && cm.IfIndex != r.ifindex {
			continue // another link's VRRP is not ours
		}
		ia, ok := src.(*net.IPAddr)
		if !ok {
			continue
		}
		s, _ := netip.AddrFromSlice(ia.IP.To4())
		d, _ := netip.AddrFromSlice(cm.Dst.To4())
		return n, s, d, cm.TTL, nil
	}
}

func (r *rawConn) WriteTo(b []byte, dst netip.Addr, deadline time.Time) error {
	if err := r.pc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	cm := &ipv4.ControlMessage{Src: r.src, IfIndex: r.ifindex}
	_, err := r.pc.WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice()})
	return err
}

func (r *rawConn) Close() error { return r.c.Close() }

// linkAddrs is Addrs for IPv4 addresses on one link, via netlink and
// gratuitous ARP.
type linkAddrs struct {
	ifname string
	addrs  []netip.Addr
}

// LinkAddrs manages the virtual addresses on ifname: host routes (/32,
// /128) added and removed with netlink, announced with gratuitous ARP
// (IPv4) and unsolicited neighbour advertisements (IPv6).
func LinkAddrs(ifname string, addrs []netip.Addr) (Addrs, error) {
	for _, a := range addrs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			return nil, fmt.Errorf("speaker: virtual address %v: want a plain IPv4 or IPv6 address", a)
		}
	}
	return &linkAddrs{ifname: ifname, addrs: addrs}, nil
}

func (l *linkAddrs) link() (netlink.Link, error) {
	link, err := netlink.LinkByName(l.ifname)
	if err != nil {
		return nil, fmt.Errorf("speaker: link %s: %w", l.ifname, err)
	}
	return link, nil
}

func (l *linkAddrs) nlAddr(a netip.Addr) *netlink.Addr {
	if a.Is6() {
		// No duplicate address detection: the address moves between
		// nodes by design, and a tentative address could not be used
		// for the second or so DAD takes.
		return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
}

func (l *linkAddrs) Take() error {
	link, err := l.link()
	if err != nil {
		return err
	}
	for _, a := range l.addrs {
		if err := netlink.AddrAdd(link, l.nlAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("speaker: add %v to %s: %w", a, l.ifname, err)
		}
	}
	return nil
}

func (l *linkAddrs) Release() error {
	link, err := l.link()
	if err != nil {
		return err
	}
	for _, a := range l.addrs {
		if err := netlink.AddrDel(link, l.nlAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("speaker: remove %v from %s: %w", a, l.ifname, err)
		}
	}
	return nil
}

func (l *linkAddrs) Announce() error {
	ifi, err := net.InterfaceByName(l.ifname)
	if err != nil {
		return fmt.Errorf("speaker: interface %s: %w", l.ifname, err)
	}
	var v4, v6 []netip.Addr
	for _, a := range l.addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return errors.Join(l.announce4(ifi, v4), l.announce6(ifi, v6))
}

func (l *linkAddrs) announce4(ifi *net.Interface, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return fmt.Errorf("speaker: ARP socket on %s: %w", l.ifname, err)
	}
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	for _, a := range addrs {
		// Both forms: some hosts update their caches only from
		// requests, others only from replies.
		for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
			p, err := arp.NewPacket(op, ifi.HardwareAddr, a, ethernet.Broadcast, a)
			if err != nil {
				return fmt.Errorf("speaker: gratuitous ARP for %v: %w", a, err)
			}
			if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
				return fmt.Errorf("speaker: gratuitous ARP for %v on %s: %w", a, l.ifname, err)
			}
		}
	}
	return nil
}

// announce6 sends unsolicited neighbour advertisements (RFC 4861 §7.2.6)
// with the override flag to all nodes, so neighbours replace the MAC they
// cached for the address.
func (l *linkAddrs) announce6(ifi *net.Interface, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return fmt.Errorf("speaker: NDP socket on %s: %w", l.ifname, err)
	}
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	for _, a := range addrs {
		m := &ndp.NeighborAdvertisement{Override: true, TargetAddress: a,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifi.HardwareAddr}}}
		if err := c.WriteTo(m, nil, netip.IPv6LinkLocalAllNodes()); err != nil {
			return fmt.Errorf("speaker: unsolicited NA for %v on %s: %w", a, l.ifname, err)
		}
	}
	return nil
}
