package vrrp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Protocol constants shared by both versions.
const (
	// IPProto is the IP protocol number of VRRP (RFC 5798 §5.1.1.4).
	IPProto = 112
	// TTL is the only TTL / hop limit a valid advertisement carries
	// (RFC 5798 §5.1.1.3, §7.1).
	TTL = 255
	// typeAdvertisement is the only message type defined (§5.2.2).
	typeAdvertisement = 1
	// headerLen is the fixed part of both versions' messages.
	headerLen = 8
	// authDataLen is the length of the VRRPv2 authentication data.
	authDataLen = 8
	// MaxAdvertIntervalV3 is the largest interval the 12-bit centisecond
	// field of VRRPv3 can carry (RFC 5798 §5.2.7): 40.95 s.
	MaxAdvertIntervalV3 = 4095 * 10 * time.Millisecond
	// MaxAdvertIntervalV2 is the largest whole-second interval VRRPv2's
	// 8-bit field can carry (RFC 3768 §5.3.7).
	MaxAdvertIntervalV2 = 255 * time.Second
)

// Multicast groups adverts are sent to (RFC 5798 §5.1.1.2, §5.1.2.2).
var (
	GroupV4 = netip.MustParseAddr("224.0.0.18")
	GroupV6 = netip.MustParseAddr("ff02::12")
)

// Authentication types of VRRPv2 (RFC 3768 §5.3.6; types 1 and 2 were
// deprecated, but keepalived's auth_type PASS still sends type 1).
const (
	AuthNone   = 0
	AuthSimple = 1
)

// Decode errors. Decode wraps one of these with detail; callers branch with
// errors.Is (for example to count drops by reason).
var (
	ErrShort    = errors.New("vrrp: packet too short")
	ErrVersion  = errors.New("vrrp: unsupported version")
	ErrType     = errors.New("vrrp: unknown message type")
	ErrCount    = errors.New("vrrp: address count does not match length")
	ErrChecksum = errors.New("vrrp: bad checksum")
	ErrInterval = errors.New("vrrp: zero advertisement interval")
	ErrFamily   = errors.New("vrrp: address family mismatch")
	ErrAuth     = errors.New("vrrp: authentication mismatch")
	ErrVRID     = errors.New("vrrp: virtual router ID mismatch")
	ErrTTL      = errors.New("vrrp: TTL is not 255")
)

// Packet is one VRRP advertisement, either version.
type Packet struct {
	// Version is 2 (RFC 3768) or 3 (RFC 5798).
	Version int
	// VRID is the virtual router identifier, 1..255.
	VRID uint8
	// Priority is the sender's priority; 0 means it is leaving the
	// master role, 255 that it owns the addresses.
	Priority uint8
	// AdvertInterval is the sender's advertisement interval: whole seconds
	// in version 2, centiseconds in version 3.
	AdvertInterval time.Duration
	// AuthType and AuthData are VRRPv2 only (zero in version 3). AuthData
	// is the password padded with zero bytes.
	AuthType uint8
	AuthData [authDataLen]byte
	// Addrs are the virtual addresses, all IPv4 or all IPv6 (IPv6 only in
	// version 3).
	Addrs []netip.Addr
}

// Password returns the VRRPv2 simple password as an 8-byte field, padded
// with zeros as keepalived does; longer passwords are an error.
func Password(s string) ([authDataLen]byte, error) {
	var b [authDataLen]byte
	if len(s) > authDataLen {
		return b, fmt.Errorf("vrrp: password is %d bytes, at most %d fit", len(s), authDataLen)
	}
	copy(b[:], s)
	return b, nil
}

// Marshal encodes p. src and dst are the IP source and destination the
// packet will be sent with: VRRPv3 checksums cover a pseudo-header made of
// them (RFC 5798 §5.2.8); VRRPv2 ignores them.
func (p *Packet) Marshal(src, dst netip.Addr) ([]byte, error) {
	if len(p.Addrs) == 0 || len(p.Addrs) > 255 {
		return nil, fmt.Errorf("vrrp: marshal: %d addresses, want 1..255", len(p.Addrs))
	}
	v6 := p.Addrs[0].Is6() && !p.Addrs[0].Is4In6()
	alen := 4
	if v6 {
		alen = 16
	}
	for _, a := range p.Addrs {
		if a.Is6() != v6 || !a.IsValid() {
			return nil, fmt.Errorf("vrrp: marshal: address %v: %w", a, ErrFamily)
		}
	}
	n := headerLen + alen*len(p.Addrs)
	var b []byte
	switch p.Version {
	case 2:
		if v6 {
			return nil, fmt.Errorf("vrrp: marshal: VRRPv2 carries IPv4 only: %w", ErrFamily)
		}
		secs := p.AdvertInterval / time.Second
		if secs < 1 || secs > 255 || p.AdvertInterval%time.Second != 0 {
			return nil, fmt.Errorf("vrrp: marshal: VRRPv2 interval %v is not 1..255 whole seconds", p.AdvertInterval)
		}
		b = make([]byte, n+authDataLen)
		b[0] = 2<<4 | typeAdvertisement
		b[1], b[2], b[3] = p.VRID, p.Priority, byte(len(p.Addrs))
		b[4], b[5] = p.AuthType, byte(secs)
		off := headerLen
		for _, a := range p.Addrs {
			off += copy(b[off:], a.AsSlice())
		}
		copy(b[off:], p.AuthData[:])
		binary.BigEndian.PutUint16(b[6:], checksum(nil, b))
	case 3:
		cs := p.AdvertInterval / (10 * time.Millisecond)
		if cs < 1 || cs > 4095 || p.AdvertInterval%(10*time.Millisecond) != 0 {
			return nil, fmt.Errorf("vrrp: marshal: VRRPv3 interval %v is not 10ms..40.95s in whole centiseconds", p.AdvertInterval)
		}
		if src.Is6() != v6 || dst.Is6() != v6 {
			return nil, fmt.Errorf("vrrp: marshal: pseudo-header %v -> %v for %v: %w", src, dst, p.Addrs[0], ErrFamily)
		}
		b = make([]byte, n)
		b[0] = 3<<4 | typeAdvertisement
		b[1], b[2], b[3] = p.VRID, p.Priority, byte(len(p.Addrs))
		binary.BigEndian.PutUint16(b[4:], uint16(cs)) // top 4 bits reserved, zero
		off := headerLen
		for _, a := range p.Addrs {
			off += copy(b[off:], a.AsSlice())
		}
		binary.BigEndian.PutUint16(b[6:], checksum(pseudoHeader(src, dst, len(b)), b))
	default:
		return nil, fmt.Errorf("vrrp: marshal: version %d: %w", p.Version, ErrVersion)
	}
	return b, nil
}

// Decode parses the VRRP message b (the IP payload) received from src to
// dst. The IP addresses matter for VRRPv3, whose checksum covers them and
// whose address family follows the IP header's. Every malformed input gives
// an error wrapping one of the Err* values; Decode never panics.
func Decode(b []byte, src, dst netip.Addr) (*Packet, error) {
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrShort, len(b), headerLen)
	}
	p := &Packet{Version: int(b[0] >> 4), VRID: b[1], Priority: b[2]}
	if t := b[0] & 0x0f; t != typeAdvertisement {
		return nil, fmt.Errorf("%w: %d", ErrType, t)
	}
	count := int(b[3])
	switch p.Version {
	case 2:
		// RFC 3768 §5.3: header, count IPv4 addresses, 8 bytes of auth data.
		want := headerLen + 4*count + authDataLen
		if len(b) < want {
			return nil, fmt.Errorf("%w: %d bytes for %d addresses, want %d", ErrShort, len(b), count, want)
		}
		if len(b) != want {
			return nil, fmt.Errorf("%w: %d bytes for %d addresses, want %d", ErrCount, len(b), count, want)
		}
		if checksum(nil, b) != 0 {
			return nil, ErrChecksum
		}
		p.AuthType = b[4]
		p.AdvertInterval = time.Duration(b[5]) * time.Second
		p.Addrs = make([]netip.Addr, count)
		for i := range count {
			p.Addrs[i] = netip.AddrFrom4([4]byte(b[headerLen+4*i:]))
		}
		copy(p.AuthData[:], b[headerLen+4*count:])
	case 3:
		v6 := src.Is6() && !src.Is4In6()
		if !src.IsValid() || !dst.IsValid() || dst.Is6() != src.Is6() {
			return nil, fmt.Errorf("%w: IP header %v -> %v", ErrFamily, src, dst)
		}
		alen := 4
		if v6 {
			alen = 16
		}
		want := headerLen + alen*count
		if len(b) < want {
			return nil, fmt.Errorf("%w: %d bytes for %d IPv%d addresses, want %d", ErrShort, len(b), count, map[bool]int{false: 4, true: 6}[v6], want)
		}
		if len(b) != want {
			return nil, fmt.Errorf("%w: %d bytes for %d addresses, want %d", ErrCount, len(b), count, want)
		}
		if checksum(pseudoHeader(src, dst, len(b)), b) != 0 {
			return nil, ErrChecksum
		}
		p.AdvertInterval = time.Duration(binary.BigEndian.Uint16(b[4:])&0x0fff) * 10 * time.Millisecond
		p.Addrs = make([]netip.Addr, count)
		for i := range count {
			off := headerLen + alen*i
			if v6 {
				p.Addrs[i] = netip.AddrFrom16([16]byte(b[off:]))
			} else {
				p.Addrs[i] = netip.AddrFrom4([4]byte(b[off:]))
			}
		}
	default:
		return nil, fmt.Errorf("%w: %d", ErrVersion, p.Version)
	}
	if count == 0 {
		return nil, fmt.Errorf("%w: zero addresses", ErrCount)
	}
	if p.AdvertInterval == 0 {
		return nil, ErrInterval
	}
	return p, nil
}

// pseudoHeader builds the IPv4 (RFC 768 style) or IPv6 (RFC 8200 §8.1)
// pseudo-header VRRPv3's checksum covers.
func pseudoHeader(src, dst netip.Addr, length int) []byte {
	if src.Is4() || src.Is4In6() {
		s, d := src.Unmap().As4(), dst.Unmap().As4()
		h := make([]byte, 0, 12)
		h = append(h, s[:]...)
		h = append(h, d[:]...)
		return append(h, 0, IPProto, byte(length>>8), byte(length))
	}
	s, d := src.As16(), dst.As16()
	h := make([]byte, 0, 40)
	h = append(h, s[:]...)
	h = append(h, d[:]...)
	return append(h, 0, 0, byte(length>>8), byte(length), 0, 0, 0, IPProto)
}

// checksum is the Internet checksum (RFC 1071) of pseudo followed by b. A
// message whose checksum field is correct sums to zero.
func checksum(pseudo, b []byte) uint16 {
	var sum uint32
	add := func(p []byte) {
		for len(p) >= 2 {
			sum += uint32(p[0])<<8 | uint32(p[1])
			p = p[2:]
		}
		if len(p) == 1 {
			sum += uint32(p[0]) << 8
		}
	}
	add(pseudo) // always of even length
	add(b)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
