package vrrp

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var (
	src4 = netip.MustParseAddr("10.77.3.1")
	src6 = netip.MustParseAddr("fe80::1")
)

func mustPass(t testing.TB, s string) [8]byte {
	t.Helper()
	b, err := Password(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Byte-exact vectors, laid out by hand from the RFC diagrams (RFC 3768
// §5.1, RFC 5798 §5.1) with checksums computed independently of this
// package.
func vectors(t testing.TB) []struct {
	name     string
	src, dst netip.Addr
	pkt      Packet
	wire     []byte
} {
	return []struct {
		name     string
		src, dst netip.Addr
		pkt      Packet
		wire     []byte
	}{
		{
			name: "v2 pass auth, 1s (RFC 3768 §5.1, keepalived auth_type PASS)",
			src:  src4, dst: GroupV4,
			pkt: Packet{Version: 2, VRID: 51, Priority: 100, AdvertInterval: time.Second, AuthType: AuthSimple,
				AuthData: mustPass(t, "secret"), Addrs: []netip.Addr{netip.MustParseAddr("10.77.3.100")}},
			wire: []byte{0x21, 0x33, 0x64, 0x01, 0x01, 0x01, 0x2f, 0xcd, 0x0a, 0x4d, 0x03, 0x64,
				0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x00, 0x00},
		},
		{
			name: "v3 IPv4, 100ms, two addresses (RFC 5798 §5.1.1, §5.2.8 pseudo-header)",
			src:  src4, dst: GroupV4,
			pkt: Packet{Version: 3, VRID: 51, Priority: 150, AdvertInterval: 100 * time.Millisecond,
				Addrs: []netip.Addr{netip.MustParseAddr("10.77.3.100"), netip.MustParseAddr("10.77.3.101")}},
			wire: []byte{0x31, 0x33, 0x96, 0x02, 0x00, 0x0a, 0x2f, 0x7c, 0x0a, 0x4d, 0x03, 0x64, 0x0a, 0x4d, 0x03, 0x65},
		},
		{
			name: "v3 IPv6, max interval 40.95s (RFC 5798 §5.1.2, §5.2.7)",
			src:  src6, dst: GroupV6,
			pkt: Packet{Version: 3, VRID: 7, Priority: 254, AdvertInterval: MaxAdvertIntervalV3,
				Addrs: []netip.Addr{netip.MustParseAddr("fd00:77:3::100")}},
			wire: []byte{0x31, 0x07, 0xfe, 0x01, 0x0f, 0xff, 0xc4, 0x5d, 0xfd, 0x00, 0x00, 0x77, 0x00, 0x03,
				0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00},
		},
	}
}

func TestCodecVectors(t *testing.T) {
	for _, tc := range vectors(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.pkt.Marshal(tc.src, tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.wire) {
				t.Errorf("Marshal:\n got %x\nwant %x", got, tc.wire)
			}
			p, err := Decode(tc.wire, tc.src, tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*p, tc.pkt) {
				t.Errorf("Decode:\n got %+v\nwant %+v", *p, tc.pkt)
			}
		})
	}
}

// TestKeepalivedCaptures decodes adverts captured from keepalived 2.2.7
// (testdata/keepalived/*.bin: the IP payload; the file name carries the
// source and destination). They are recorded by the interop test.
func TestKeepalivedCaptures(t *testing.T) {
	files, _ := filepath.Glob("testdata/keepalived/*.bin")
	if len(files) == 0 {
		t.Skip("no keepalived captures in testdata/keepalived (recorded by the speaker's interop test)")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var name, s, d string
		base := filepath.Base(f)
		parts := bytes.Split([]byte(base[:len(base)-4]), []byte("_"))
		if len(parts) != 3 {
			t.Fatalf("%s: want name_src_dst.bin", base)
		}
		name, s, d = string(parts[0]), string(parts[1]), string(parts[2])
		src, dst := netip.MustParseAddr(s), netip.MustParseAddr(d)
		p, err := Decode(b, src, dst)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// Re-encoding reproduces keepalived's bytes exactly.
		again, err := p.Marshal(src, dst)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(again, b) {
			t.Errorf("%s: re-encoded\n got %x\nwant %x", name, again, b)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	v := vectors(t)
	v2, v3, v6 := v[0].wire, v[1].wire, v[2].wire
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	tests := []struct {
		name     string
		b        []byte
		src, dst netip.Addr
		want     error
	}{
		{"empty", nil, src4, GroupV4, ErrShort},
		{"7 bytes", v3[:7], src4, GroupV4, ErrShort},
		{"v3 truncated address", v3[:14], src4, GroupV4, ErrShort},
		{"v2 missing auth data", v2[:12], src4, GroupV4, ErrShort},
		{"v3 trailing byte", append(append([]byte(nil), v3...), 0), src4, GroupV4, ErrCount},
		{"v2 trailing bytes", append(append([]byte(nil), v2...), 0, 0, 0, 0), src4, GroupV4, ErrCount},
		{"version 1", mod(v3, func(b []byte) []byte { b[0] = 0x11; return b }), src4, GroupV4, ErrVersion},
		{"version 4", mod(v3, func(b []byte) []byte { b[0] = 0x41; return b }), src4, GroupV4, ErrVersion},
		{"type 2", mod(v3, func(b []byte) []byte { b[0] = 0x32; return b }), src4, GroupV4, ErrType},
		{"v2 bad checksum", mod(v2, func(b []byte) []byte { b[7] ^= 1; return b }), src4, GroupV4, ErrChecksum},
		{"v3 bad checksum", mod(v3, func(b []byte) []byte { b[6] ^= 0x80; return b }), src4, GroupV4, ErrChecksum},
		{"v3 payload flipped", mod(v3, func(b []byte) []byte { b[2]++; return b }), src4, GroupV4, ErrChecksum},
		{"v3 other source (pseudo-header)", v3, netip.MustParseAddr("10.77.3.2"), GroupV4, ErrChecksum},
		{"v3 unicast destination (pseudo-header)", v3, src4, netip.MustParseAddr("10.77.3.2"), ErrChecksum},
		{"v6 wrong source", v6, netip.MustParseAddr("fe80::2"), GroupV6, ErrChecksum},
		{"v3 v4 packet from v6 header", v3, src6, GroupV6, ErrShort},
		{"v3 mixed families in header", v3, src4, GroupV6, ErrFamily},
		{"v3 no IP header", v3, netip.Addr{}, netip.Addr{}, ErrFamily},
		{"v3 count too large", mod(v3, func(b []byte) []byte { b[3] = 3; return b }), src4, GroupV4, ErrShort},
		{"v3 count too small", mod(v3, func(b []byte) []byte { b[3] = 1; return b }), src4, GroupV4, ErrCount},
		{"v3 zero addresses", fix3(t, []byte{0x31, 1, 100, 0, 0, 10, 0, 0}), src4, GroupV4, ErrCount},
		{"v3 zero interval", fix3(t, []byte{0x31, 1, 100, 1, 0xf0, 0, 0, 0, 10, 77, 3, 100}), src4, GroupV4, ErrInterval},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decode(tc.b, tc.src, tc.dst)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode = %+v, %v; want %v", p, err, tc.want)
			}
			if p != nil {
				t.Errorf("Decode returned a packet with error %v", err)
			}
		})
	}
}

// fix3 fills in a correct VRRPv3 IPv4 checksum (from src4 to GroupV4), so a
// test reaches the check after the checksum.
func fix3(t *testing.T, b []byte) []byte {
	t.Helper()
	b[6], b[7] = 0, 0
	c := checksum(pseudoHeader(src4, GroupV4, len(b)), b)
	b[6], b[7] = byte(c>>8), byte(c)
	return b
}

func TestV3ReservedBitsIgnored(t *testing.T) {
	// RFC 5798 §5.2.7: the 4 reserved bits are ignored on receipt.
	b := fix3(t, []byte{0x31, 1, 100, 1, 0xf0, 0x0a, 0, 0, 10, 77, 3, 100})
	p, err := Decode(b, src4, GroupV4)
	if err != nil {
		t.Fatal(err)
	}
	if p.AdvertInterval != 100*time.Millisecond {
		t.Errorf("interval %v, want 100ms", p.AdvertInterval)
	}
}

func TestMarshalErrors(t *testing.T) {
	a4 := []netip.Addr{netip.MustParseAddr("10.77.3.100")}
	a6 := []netip.Addr{netip.MustParseAddr("fd00::1")}
	tests := []struct {
		name string
		p    Packet
		src  netip.Addr
	}{
		{"no addresses", Packet{Version: 3, VRID: 1, Priority: 1, AdvertInterval: time.Second}, src4},
		{"version 1", Packet{Version: 1, VRID: 1, Priority: 1, AdvertInterval: time.Second, Addrs: a4}, src4},
		{"v2 IPv6", Packet{Version: 2, VRID: 1, Priority: 1, AdvertInterval: time.Second, Addrs: a6}, src6},
		{"v2 sub-second", Packet{Version: 2, VRID: 1, Priority: 1, AdvertInterval: 100 * time.Millisecond, Addrs: a4}, src4},
		{"v2 256s", Packet{Version: 2, VRID: 1, Priority: 1, AdvertInterval: 256 * time.Second, Addrs: a4}, src4},
		{"v3 5ms", Packet{Version: 3, VRID: 1, Priority: 1, AdvertInterval: 5 * time.Millisecond, Addrs: a4}, src4},
		{"v3 41s", Packet{Version: 3, VRID: 1, Priority: 1, AdvertInterval: 41 * time.Second, Addrs: a4}, src4},
		{"v3 mixed families", Packet{Version: 3, VRID: 1, Priority: 1, AdvertInterval: time.Second, Addrs: append(a4, a6...)}, src4},
		{"v3 v6 addrs from v4 source", Packet{Version: 3, VRID: 1, Priority: 1, AdvertInterval: time.Second, Addrs: a6}, src4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := GroupV4
			if tc.src.Is6() {
				dst = GroupV6
			}
			if b, err := tc.p.Marshal(tc.src, dst); err == nil {
				t.Fatalf("Marshal = %x, want an error", b)
			}
		})
	}
	if _, err := Password("123456789"); err == nil {
		t.Error("Password accepted 9 bytes")
	}
}

func FuzzDecode(f *testing.F) {
	for _, v := range vectors(f) {
		f.Add(v.wire, v.src.Is6())
	}
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		src, dst := src4, GroupV4
		if v6 {
			src, dst = src6, GroupV6
		}
		p, err := Decode(b, src, dst)
		if err != nil {
			if p != nil {
				t.Fatal("packet and error")
			}
			return
		}
		// Whatever decodes re-encodes to the same bytes, except the
		// reserved bits of VRRPv3, which are ignored and sent as zero.
		again, err := p.Marshal(src, dst)
		if err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", p, err)
		}
		want := append([]byte(nil), b...)
		if p.Version == 3 {
			want[4] &= 0x0f
			again[6], again[7], want[6], want[7] = 0, 0, 0, 0
		}
		if !bytes.Equal(again, want) {
			t.Fatalf("round trip\n got %x\nwant %x", again, want)
		}
	})
}
