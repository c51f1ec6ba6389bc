// Package vip holds the end-to-end tests of the VRRP speaker: haplane
// speakers run as separate processes in network namespaces on a bridge
// (10.77.3.0/24, fd77:3::/64), a client measures the outage a failover
// causes, hostile packets are injected on the link (IPv4 and IPv6), a
// master's node is saturated with CPU hogs while its adverts are timed,
// and real keepalived runs as a peer.
// The tests need root; they skip with a message otherwise.
package vip
