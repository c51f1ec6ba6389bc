// Package vrrp owns the Virtual Router Redundancy Protocol itself, with no
// I/O: the advertisement codec for VRRPv2 (RFC 3768, including the simple
// text password keepalived still sends) and VRRPv3 (RFC 5798, IPv4 and IPv6),
// the per-router state machine of RFC 5798 §6.4, and the tracked-priority
// arithmetic (base priority plus weights of tracked checks, with fall/rise
// hysteresis).
//
// Time and received packets are inputs and the machine's decisions are
// outputs (send an advertisement, take or release the virtual addresses,
// announce them, and when to call back). The caller owns sockets, clocks and
// goroutines; see internal/vrrp/speaker for the runtime. The package imports
// only the standard library.
package vrrp
