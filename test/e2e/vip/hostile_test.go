package vip

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/haplane/haplane/internal/vrrp"
)

// injector sends hand-made IPv4 packets (protocol 112) from the client
// namespace, with full control of the header.
type injector struct {
	t  *testing.T
	l  *lab
	rc *ipv4.RawConn
}

func newInjector(t *testing.T, l *lab) *injector {
	run(t, "ip", "-n", l.client, "route", "add", "224.0.0.0/4", "dev", "eth0")
	in := &injector{t: t, l: l}
	err := inNS(l.client, func() error {
		c, err := net.ListenPacket(fmt.Sprintf("ip4:%d", vrrp.IPProto), "0.0.0.0")
		if err != nil {
			return err
		}
		in.rc, err = ipv4.NewRawConn(c)
		return err
	})
	if err != nil {
		t.Fatalf("raw socket in client namespace: %v", err)
	}
	t.Cleanup(func() { in.rc.Close() })
	return in
}

func (in *injector) send(payload []byte, ttl int) {
	in.t.Helper()
	h := &ipv4.Header{Version: 4, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + len(payload), TTL: ttl,
		Protocol: vrrp.IPProto, Src: net.ParseIP(clientAddr).To4(), Dst: net.ParseIP("224.0.0.18").To4()}
	if err := in.rc.WriteTo(h, payload, nil); err != nil {
		in.t.Fatalf("inject: %v", err)
	}
}

var (
	injSrc = netip.MustParseAddr(clientAddr)
	vipNet = netip.MustParseAddr(vipAddr)
)

// advert marshals an advert as a peer at the client's address would send it.
func advert(t *testing.T, p vrrp.Packet) []byte {
	t.Helper()
	if len(p.Addrs) == 0 {
		p.Addrs = []netip.Addr{vipNet}
	}
	if p.VRID == 0 {
		p.VRID = 51
	}
	b, err := p.Marshal(injSrc, vrrp.GroupV4)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sender sends a VRRP message to the group with the given TTL (hop
// limit over IPv6): the IPv4 injector or the IPv6 one.
type sender interface {
	send(payload []byte, ttl int)
}

// hostile sends every packet of each kind n times, spread over about a
// second, then checks nothing changed: h1 still master and sole holder
// (as holders reports), every speaker alive, no state change logged.
func hostile(t *testing.T, ps []*proc, in sender, holders func() []string, kinds map[string]struct {
	b   []byte
	ttl int
}) {
	t.Helper()
	start := time.Now()
	for round := range 20 {
		for _, k := range kinds {
			in.send(k.b, k.ttl)
		}
		// Random garbage too, of random lengths (bounded, seeded).
		r := rand.New(rand.NewPCG(uint64(round), 7))
		for range 5 {
			g := make([]byte, r.IntN(64))
			for i := range g {
				g[i] = byte(r.UintN(256))
			}
			in.send(g, 255)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Longer than Master_Down_Interval, so a packet that had wrongly
	// reset or shortened a backup's timer would have shown.
	time.Sleep(500 * time.Millisecond)
	for _, p := range ps {
		if !p.alive() {
			t.Errorf("%s died under hostile packets", p.name)
		}
		for _, e := range p.eventsSince(start) {
			if e.msg == "vrrp state" {
				t.Errorf("%s changed state under hostile packets: %+v", p.name, e)
			}
		}
	}
	if h := holders(); !slices.Equal(h, []string{"h1"}) {
		t.Errorf("VIP holders %v after hostile packets, want [h1]", h)
	}
}

// positiveControl proves the injection path reaches the speakers: a valid
// priority-254 advert makes the master yield.
func positiveControl(t *testing.T, ps []*proc, in sender, valid []byte) {
	t.Helper()
	start := time.Now()
	for range 5 {
		in.send(valid, 255)
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "h1 to yield to a valid priority-254 advert (positive control)", 2*time.Second, func() bool {
		_, ok := ps[0].firstState("backup", start)
		return ok
	})
}

func TestHostilePacketsV3(t *testing.T) {
	l, ps := threeSpeakers(t)
	in := newInjector(t, l)
	good := advert(t, vrrp.Packet{Version: 3, Priority: 254, AdvertInterval: interval})
	badSum := append([]byte(nil), good...)
	badSum[7] ^= 0x55
	stop := advert(t, vrrp.Packet{Version: 3, Priority: 0, AdvertInterval: interval})
	stopBadSum := append([]byte(nil), stop...)
	stopBadSum[6] ^= 0x10
	countLie := append([]byte(nil), good...)
	countLie[3] = 2
	kinds := map[string]struct {
		b   []byte
		ttl int
	}{
		"short":              {good[:6], 255},
		"empty":              {nil, 255},
		"bad checksum":       {badSum, 255},
		"priority 0 bad sum": {stopBadSum, 255},
		"TTL 64":             {good, 64},
		"TTL 254":            {good, 254},
		"priority 0 TTL 64":  {stop, 64},
		"wrong VRID":         {advert(t, vrrp.Packet{Version: 3, VRID: 52, Priority: 254, AdvertInterval: interval}), 255},
		"version 2":          {advert(t, vrrp.Packet{Version: 2, Priority: 254, AdvertInterval: time.Second}), 255},
		"count mismatch":     {countLie, 255},
		"trailing garbage":   {append(append([]byte(nil), good...), 1, 2, 3, 4), 255},
		"type 2":             {append([]byte{0x32}, good[1:]...), 255},
	}
	hostile(t, ps, in, l.holders, kinds)
	// Dropped, and counted by reason on vip run's /metrics.
	drops := dropCounts(t, l.host("h1"))
	t.Logf("h1's drops by reason: %v", drops)
	for _, reason := range []string{"ttl", "checksum", "vrid", "version", "short", "count", "type"} {
		if drops[reason] == 0 {
			t.Errorf("h1 counted no %q drop after hostile packets (%v)", reason, drops)
		}
	}
	positiveControl(t, ps, in, good)
}

// dropCounts reads haplane_vrrp_adverts_dropped_total by reason from the
// speaker's /metrics inside h's namespace.
func dropCounts(t *testing.T, h *host) map[string]float64 {
	t.Helper()
	var body []byte
	err := inNS(h.ns, func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:9446", 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n"); err != nil {
			return err
		}
		body, err = io.ReadAll(c)
		return err
	})
	if err != nil {
		t.Fatalf("metrics of %s: %v", h.name, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, `haplane_vrrp_adverts_dropped_total{reason="`)
		if !ok {
			continue
		}
		reason, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err == nil {
			out[reason] = v
		}
	}
	return out
}

func TestHostilePacketsV2Auth(t *testing.T) {
	l := newLab(t, 3)
	cfg := l.writeConfig(clusterOpts{version: 2, interval: "1s", auth: "secret12"})
	ps := l.startAll(cfg, 6*time.Second, l.holders)
	in := newInjector(t, l)
	pw := func(s string) [8]byte { b, _ := vrrp.Password(s); return b }
	v2 := func(prio uint8, auth uint8, pass string) []byte {
		return advert(t, vrrp.Packet{Version: 2, Priority: prio, AdvertInterval: time.Second, AuthType: auth, AuthData: pw(pass)})
	}
	kinds := map[string]struct {
		b   []byte
		ttl int
	}{
		"wrong password":            {v2(254, vrrp.AuthSimple, "guess"), 255},
		"no auth":                   {v2(254, vrrp.AuthNone, ""), 255},
		"priority 0 wrong password": {v2(0, vrrp.AuthSimple, "guess"), 255},
		"right password TTL 64":     {v2(254, vrrp.AuthSimple, "secret12"), 64},
		"interval mismatch":         {advert(t, vrrp.Packet{Version: 2, Priority: 254, AdvertInterval: 2 * time.Second, AuthType: vrrp.AuthSimple, AuthData: pw("secret12")}), 255},
	}
	hostile(t, ps, in, l.holders, kinds)
	drops := dropCounts(t, l.host("h1"))
	for _, reason := range []string{"auth", "ttl", "interval_mismatch"} {
		if drops[reason] == 0 {
			t.Errorf("h1 counted no %q drop after hostile packets (%v)", reason, drops)
		}
	}
	positiveControl(t, ps, in, v2(254, vrrp.AuthSimple, "secret12"))
}
