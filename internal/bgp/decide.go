// Package bgp owns the VIP's BGP announcements in vip.mode bgp: each
// control-plane node announces the VIP as a host route (/32, or /128) with
// itself as next hop to its routers while its local health allows, and
// withdraws it when it does not and before the node stops serving, so the
// routers spread clients over every healthy node (ECMP).
//
// The decision (Decide) is pure; Announcer is the edge, built on gobgp as
// a library: it speaks BGP, this package never encodes a message itself.
package bgp

// Inputs are what the announcement depends on.
type Inputs struct {
	// Healthy is the node's local health: its load balancer has an
	// apiserver to send to (the same signal that sets the VRRP priority).
	Healthy bool
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
// in asks for: announced exactly while healthy, not stopping and not paused.
func Decide(announced bool, in Inputs) Action {
	want := in.Healthy && !in.Stopping && !in.Paused
	switch {
	case want && !announced:
		return Announce
	case !want && announced:
		return Withdraw
	}
	return None
}
