package vip

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/haplane/haplane/internal/vrrp"
)

// injector6 sends hand-made VRRP messages to ff02::12 from the client
// namespace's link-local address, with the hop limit of its choice.
type injector6 struct {
	t       *testing.T
	pc      *ipv6.PacketConn
	src     netip.Addr
	ifindex int
}

func newInjector6(t *testing.T, l *lab) *injector6 {
	in := &injector6{t: t}
	err := inNS(l.client, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		in.ifindex = ifi.Index
		addrs, err := ifi.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Is6() && ip.IsLinkLocalUnicast() {
					in.src = ip
				}
			}
		}
		if !in.src.IsValid() {
			return fmt.Errorf("no link-local address on the client's eth0")
		}
		c, err := net.ListenPacket(fmt.Sprintf("ip6:%d", vrrp.IPProto), "::")
		if err != nil {
			return err
		}
		in.pc = ipv6.NewPacketConn(c)
		return nil
	})
	if err != nil {
		t.Fatalf("raw IPv6 socket in client namespace: %v", err)
	}
	t.Cleanup(func() { in.pc.Close() })
	return in
}

func (in *injector6) send(payload []byte, hopLimit int) {
	in.t.Helper()
	cm := &ipv6.ControlMessage{Src: in.src.AsSlice(), IfIndex: in.ifindex, HopLimit: hopLimit}
	if _, err := in.pc.WriteTo(payload, cm, &net.IPAddr{IP: vrrp.GroupV6.AsSlice()}); err != nil {
		in.t.Fatalf("inject: %v", err)
	}
}

// advert6 marshals an IPv6 advert as the client's link-local address
// would send it (checksum over the IPv6 pseudo-header).
func (in *injector6) advert(p vrrp.Packet) []byte {
	in.t.Helper()
	if len(p.Addrs) == 0 {
		p.Addrs = []netip.Addr{netip.MustParseAddr(vip6)}
	}
	if p.VRID == 0 {
		p.VRID = 51
	}
	b, err := p.Marshal(in.src, vrrp.GroupV6)
	if err != nil {
		in.t.Fatal(err)
	}
	return b
}

// The IPv6 twin of TestHostilePacketsV3 (RFC 5798 §7.1 over IPv6): bad
// adverts to ff02::12 leave every speaker as it was, and each is counted
// by reason.
func TestHostilePacketsIPv6(t *testing.T) {
	l := newLab(t, 3)
	l.addIPv6()
	cfg := l.writeConfig(clusterOpts{ipv6: true})
	ps := l.startAll(cfg, 5*time.Second, l.holders6)
	time.Sleep(500 * time.Millisecond)
	if ps[1].state() != "backup" || ps[2].state() != "backup" {
		t.Fatalf("h2 %s, h3 %s: want both backup behind h1", ps[1].state(), ps[2].state())
	}
	in := newInjector6(t, l)
	good := in.advert(vrrp.Packet{Version: 3, Priority: 254, AdvertInterval: interval})
	badSum := append([]byte(nil), good...)
	badSum[7] ^= 0x55
	stop := in.advert(vrrp.Packet{Version: 3, Priority: 0, AdvertInterval: interval})
	stopBadSum := append([]byte(nil), stop...)
	stopBadSum[6] ^= 0x10
	// The version nibble rewritten, checksum left as it was.
	v2 := append([]byte{0x21}, good[1:]...)
	v4 := append([]byte{0x41}, good[1:]...)
	kinds := map[string]struct {
		b   []byte
		ttl int
	}{
		"short":               {good[:6], 255},
		"empty":               {nil, 255},
		"IPv4-sized":          {good[:12], 255},
		"bad checksum":        {badSum, 255},
		"priority 0 bad sum":  {stopBadSum, 255},
		"hop limit 64":        {good, 64},
		"hop limit 254":       {good, 254},
		"priority 0 hop 1":    {stop, 1},
		"wrong VRID":          {in.advert(vrrp.Packet{Version: 3, VRID: 52, Priority: 254, AdvertInterval: interval}), 255},
		"version 2":           {v2, 255},
		"version 4":           {v4, 255},
		"trailing garbage":    {append(append([]byte(nil), good...), 1, 2, 3, 4), 255},
		"priority 0 VRID 52":  {in.advert(vrrp.Packet{Version: 3, VRID: 52, Priority: 0, AdvertInterval: interval}), 255},
		"priority 0 version4": {append([]byte{0x41}, stop[1:]...), 255},
	}
	before := dropCounts(t, l.host("h1"))
	hostile(t, ps, in, l.holders6, kinds)
	drops := dropCounts(t, l.host("h1"))
	t.Logf("h1's drops by reason: before %v, after %v", before, drops)
	for _, reason := range []string{"ttl", "checksum", "vrid", "version", "short", "count"} {
		if drops[reason] <= before[reason] {
			t.Errorf("h1 counted no new %q drop after hostile IPv6 packets (before %v, after %v)", reason, before, drops)
		}
	}
	// The path reaches the speakers: a valid priority-254 advert from the
	// client makes h1 yield.
	positiveControl(t, ps, in, good)
}
