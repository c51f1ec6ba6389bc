//go:build linux

package speaker

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/haplane/haplane/internal/vip"
	"github.com/haplane/haplane/internal/vrrp"
)

// This file and linux6.go are the speaker's Linux sockets: raw IP protocol
// 112, bound to one interface. The addresses themselves are internal/vip's;
// the speaker takes any Conn and Addrs.

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

// LinkAddrs manages the virtual addresses on ifname with internal/vip:
// netlink add and remove, gratuitous ARP and unsolicited neighbour
// advertisements.
func LinkAddrs(ifname string, addrs []netip.Addr) (Addrs, error) {
	return vip.New(ifname, addrs)
}
