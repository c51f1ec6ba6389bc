//go:build linux

// Package vip owns virtual addresses on a Linux link: it adds and removes
// them with netlink and announces them to the neighbours (gratuitous ARP,
// unsolicited neighbour advertisements) so that clients switch to this
// host's MAC at once. It knows nothing of VRRP: the speaker decides when.
package vip

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link holds virtual addresses on one network link.
type Link struct {
	ifname string
	addrs  []netip.Addr
}

// New manages addrs on ifname: host addresses (/32, /128) added and
// removed with netlink, announced with gratuitous ARP (IPv4) and
// unsolicited neighbour advertisements (IPv6).
func New(ifname string, addrs []netip.Addr) (*Link, error) {
	for _, a := range addrs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			return nil, fmt.Errorf("vip: virtual address %v: want a plain IPv4 or IPv6 address", a)
		}
	}
	return &Link{ifname: ifname, addrs: addrs}, nil
}

func (l *Link) link() (netlink.Link, error) {
	link, err := netlink.LinkByName(l.ifname)
	if err != nil {
		return nil, fmt.Errorf("vip: link %s: %w", l.ifname, err)
	}
	return link, nil
}

func (l *Link) nlAddr(a netip.Addr) *netlink.Addr {
	if a.Is6() {
		// No duplicate address detection: the address moves between
		// nodes by design, and a tentative address could not be used
		// for the second or so DAD takes.
		return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
}

// Take adds the addresses, or refreshes those already present, valid for
// lifetime: the kernel removes an address whose lifetime ran out, so a
// holder that dies or hangs without releasing it stops answering for it
// once it is no longer renewed (by calling Take again). The kernel counts
// whole seconds, so lifetime is rounded up to one; zero or less means no
// expiry. The kernel's own check runs about once a second: an address
// outlives its lifetime by up to about 250ms.
func (l *Link) Take(lifetime time.Duration) error {
	link, err := l.link()
	if err != nil {
		return err
	}
	secs := LifetimeSeconds(lifetime)
	for _, a := range l.addrs {
		na := l.nlAddr(a)
		// Both lifetimes alike: an address past its preferred lifetime
		// alone is deprecated, not removed, and would still answer.
		na.ValidLft, na.PreferedLft = int(secs), int(secs)
		// Replace, not add: a present address gets the new lifetime (an
		// add would fail with EEXIST and leave the old one running out).
		if err := netlink.AddrReplace(link, na); err != nil {
			return fmt.Errorf("vip: add %v to %s (lifetime %ds): %w", a, l.ifname, secs, err)
		}
	}
	return nil
}

// Forever is the kernel's infinite address lifetime (INFINITY_LIFE_TIME).
const Forever = ^uint32(0)

// LifetimeSeconds is the kernel lifetime Take gives an address for d:
// whole seconds rounded up, Forever for zero or less.
func LifetimeSeconds(d time.Duration) uint32 {
	if d <= 0 {
		return Forever
	}
	s := (d + time.Second - 1) / time.Second
	return uint32(min(s, time.Duration(Forever-1)))
}

// Release removes the addresses; one already absent is not an error. It
// removes every copy of each address on the link whatever its prefix
// length, not only the host address Take adds: a copy configured by hand
// or left by another tool (10.0.0.100/24, say) answers for the VIP just
// the same. Addresses that merely share the VIP's subnet stay.
func (l *Link) Release() error {
	link, err := l.link()
	if err != nil {
		return err
	}
	present, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("vip: list addresses of %s: %w", l.ifname, err)
	}
	for _, a := range l.addrs {
		// The host address first, even if the listing missed it (it may
		// have been added since).
		del := []*netlink.Addr{l.nlAddr(a)}
		for _, p := range present {
			if ip, ok := netip.AddrFromSlice(p.IP); !ok || ip != a || isHost(p.IPNet) {
				continue
			}
			if err := l.safeToDelete(p, present); err != nil {
				return err
			}
			del = append(del, &netlink.Addr{IPNet: &net.IPNet{IP: p.IP, Mask: p.Mask}})
		}
		for _, d := range del {
			if err := netlink.AddrDel(link, d); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("vip: remove %v from %s: %w", d.IPNet, l.ifname, err)
			}
		}
	}
	return nil
}

func isHost(n *net.IPNet) bool {
	ones, bits := n.Mask.Size()
	return ones == bits
}

// safeToDelete refuses to remove an IPv4 copy of the VIP that is the
// primary address of its subnet while the node has secondary addresses in
// it: unless promote_secondaries is set, the kernel would remove those
// with it, and one of them is likely the node's own address.
func (l *Link) safeToDelete(p netlink.Addr, present []netlink.Addr) error {
	if p.IP.To4() == nil || p.Flags&unix.IFA_F_SECONDARY != 0 {
		return nil
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/promote_secondaries", l.ifname)); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	for _, o := range present {
		// The kernel removes the secondaries of the same subnet and
		// prefix length with their primary.
		if o.Flags&unix.IFA_F_SECONDARY != 0 && o.IP.To4() != nil && !o.IP.Equal(p.IP) &&
			bytes.Equal(o.Mask, p.Mask) && p.IPNet.Contains(o.IP) {
			return fmt.Errorf("vip: stale %v on %s is the primary address of its subnet: removing it would also remove %v "+
				"(net.ipv4.conf.%s.promote_secondaries is off); remove it by hand", p.IPNet, l.ifname, o.IPNet, l.ifname)
		}
	}
	return nil
}

// Announce sends one round of gratuitous ARPs (a request and a reply per
// IPv4 address) and unsolicited neighbour advertisements (per IPv6
// address). Callers space the rounds of a burst themselves.
func (l *Link) Announce() error {
	ifi, err := net.InterfaceByName(l.ifname)
	if err != nil {
		return fmt.Errorf("vip: interface %s: %w", l.ifname, err)
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

func (l *Link) announce4(ifi *net.Interface, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return fmt.Errorf("vip: ARP socket on %s: %w", l.ifname, err)
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
				return fmt.Errorf("vip: gratuitous ARP for %v: %w", a, err)
			}
			if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
				return fmt.Errorf("vip: gratuitous ARP for %v on %s: %w", a, l.ifname, err)
			}
		}
	}
	return nil
}

// announce6 sends unsolicited neighbour advertisements (RFC 4861 §7.2.6)
// with the override flag to all nodes, so neighbours replace the MAC they
// cached for the address.
func (l *Link) announce6(ifi *net.Interface, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return fmt.Errorf("vip: NDP socket on %s: %w", l.ifname, err)
	}
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	for _, a := range addrs {
		m := &ndp.NeighborAdvertisement{Override: true, TargetAddress: a,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifi.HardwareAddr}}}
		if err := c.WriteTo(m, nil, netip.IPv6LinkLocalAllNodes()); err != nil {
			return fmt.Errorf("vip: unsolicited NA for %v on %s: %w", a, l.ifname, err)
		}
	}
	return nil
}
