// Package bgp owns the VIP's BGP announcements in vip.mode bgp: each
// control-plane node announces the VIP as a host route (/32, or /128) with
// itself as next hop to its routers while its local health allows, and
// withdraws it when it does not and before the node stops serving, so the
// routers spread clients over every healthy node (ECMP).
//
// The decision (Decide) is pure; Announcer is the edge, built on gobgp as
// a library: it speaks BGP, this package never encodes a message itself.
package bgp

// Health is the node's local health as the announcement reads it.
type Health int

const (
	// Down: the load balancer has no apiserver to send to.
	Down Health = iota
	// Panic: no apiserver is ready, some are live (the load balancer's
	// panic routing). Every node sees it together when etcd's quorum is
	// lost, and then withdrawing everywhere would take the VIP off the
	// routers; but a node cut off from the others sees it alone (its own
	// apiserver live, cut from etcd). So panic keeps a route the routers
	// hold and never starts one: a node whose sessions came back while in
	// panic waits for a ready apiserver before it draws clients.
	Panic
	// Ready: some apiserver passes the readiness check.
	Ready
)

func (h Health) String() string {
	switch h {
	case Ready:
		return "ready"
	case Panic:
		return "panic"
	}
	return "down"
}

// Inputs are what the announcement depends on.
type Inputs struct {
	// Health is the node's local health: whether its load balancer has an
	// apiserver to send to (the same signal that sets the VRRP priority).
	Health Health
	// Held is whether some established peer holds the route now (its
	// Adj-RIB-Out has it). Only panic reads it.
	Held bool
	// Stopping is set once a graceful stop began: the route goes first,
	// while the load balancer still serves the connections in flight.
	Stopping bool
	// Paused is set while the node is in maintenance: withdrawn, the
	// node still up and serving what is in flight.
	Paused bool
}

// Action is what the edge does next.
type Action int

const (
	// None keeps the route as it is.
	None Action = iota
	// Announce adds the VIP route.
	Announce
	// Withdraw removes it.
	Withdraw
)

func (a Action) String() string {
	switch a {
	case Announce:
		return "announce"
	case Withdraw:
		return "withdraw"
	}
	return "none"
}

// Decide returns the action that brings the route from announced to what
// in asks for: announced while ready, or in panic while a peer still holds
// it, and neither stopping nor paused. announced is the route in the local
// RIB, which gobgp sends to every session that comes up: a route no peer
// holds in panic is withdrawn from it, so a session that comes back does
// not get it.
func Decide(announced bool, in Inputs) Action {
	keep := in.Health == Panic && announced && in.Held
	want := (in.Health == Ready || keep) && !in.Stopping && !in.Paused
	switch {
	case want && !announced:
		return Announce
	case !want && announced:
		return Withdraw
	}
	return None
}
