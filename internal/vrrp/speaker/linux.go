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
	var pc *ipv4.PacketConn
	c, err := listenGroup("ip4", "0.0.0.0", ifi, vrrp.GroupV4, func(c net.PacketConn) groupConn {
		pc = ipv4.NewPacketConn(c)
		return group4{pc}
	})
	if err != nil {
		return nil, err
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

// listenRaw opens a raw VRRP socket of family ("ip4", "ip6") on laddr,
// bound to ifname (SO_BINDTODEVICE) so that only that link's adverts reach
// it.
func listenRaw(family, laddr, ifname string) (net.PacketConn, error) {
	c, err := net.ListenPacket(fmt.Sprintf("%s:%d", family, vrrp.IPProto), laddr)
	if err != nil {
		return nil, fmt.Errorf("speaker: open raw VRRP socket (%s): %w", family, err)
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c, nil
	}
	err = setup(c, ifname, step{"bind to device", func() error {
		raw, err := sc.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
		}); err != nil {
			return err
		}
		return serr
	}})
	return c, err
}

// groupConn is what the socket setup needs of an ipv4.PacketConn or an
// ipv6.PacketConn: the two differ only in the names of the hop-count
// options and in their control message flags, so both families share
// listenGroup's one list of steps.
type groupConn interface {
	JoinGroup(ifi *net.Interface, group net.Addr) error
	SetMulticastInterface(ifi *net.Interface) error
	SetMulticastLoopback(on bool) error
	hops() string // the option's name in errors: "TTL", "hop limit"
	setMulticastHops(n int) error
	setHops(n int) error
	enableControl() error // destination, interface and hop count of each read
}

// listenGroup opens a raw VRRP socket of family on laddr bound to ifi,
// joins group there, sends to it on ifi with hop count 255 (RFC 5798
// §5.1.1.3: receivers drop adverts that crossed a router), turns off
// multicast loopback so that the node does not hear itself, and asks for
// the control messages that ReadFrom checks. wrap gives the family's
// PacketConn over the socket.
func listenGroup(family, laddr string, ifi *net.Interface, group netip.Addr, wrap func(net.PacketConn) groupConn) (net.PacketConn, error) {
	c, err := listenRaw(family, laddr, ifi.Name)
	if err != nil {
		return nil, err
	}
	g := wrap(c)
	err = setup(c, ifi.Name,
		step{"join " + group.String(), func() error { return g.JoinGroup(ifi, &net.IPAddr{IP: group.AsSlice()}) }},
		step{"set multicast interface", func() error { return g.SetMulticastInterface(ifi) }},
		step{"set multicast " + g.hops(), func() error { return g.setMulticastHops(vrrp.TTL) }},
		step{"set " + g.hops(), func() error { return g.setHops(vrrp.TTL) }},
		step{"disable multicast loopback", func() error { return g.SetMulticastLoopback(false) }},
		step{"enable control messages", g.enableControl},
	)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// group4 is the IPv4 groupConn.
type group4 struct{ *ipv4.PacketConn }

func (group4) hops() string                   { return "TTL" }
func (g group4) setMulticastHops(n int) error { return g.SetMulticastTTL(n) }
func (g group4) setHops(n int) error          { return g.SetTTL(n) }
func (g group4) enableControl() error {
	return g.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst|ipv4.FlagInterface, true)
}

// step is one socket option set by setup.
type step struct {
	op string
	do func() error
}

// setup runs the steps in order; at the first failure it closes c and
// returns the error, naming the step and the interface.
func setup(c net.PacketConn, ifname string, steps ...step) error {
	for _, st := range steps {
		if err := st.do(); err != nil {
			c.Close()
			return fmt.Errorf("speaker: %s on %s: %w", st.op, ifname, err)
		}
	}
	return nil
}

// LinkAddrs manages the virtual addresses on ifname with internal/vip:
// netlink add and remove, gratuitous ARP and unsolicited neighbour
// advertisements.
func LinkAddrs(ifname string, addrs []netip.Addr) (Addrs, error) {
	return vip.New(ifname, addrs)
}
