package lb

import (
	"fmt"
	"sync/atomic"
)

// Policy chooses a backend for a new connection among candidates, every
// one of which is usable. It is a pure function of the candidates' atomic
// counters and the policy's own counter; it returns nil only when
// candidates is empty. Implementations are safe for concurrent use.
type Policy interface {
	Select(candidates []*Backend) *Backend
}

// NewPolicy returns the policy called name: "roundrobin" or "leastconn".
func NewPolicy(name string) (Policy, error) {
	switch name {
	case "", "roundrobin":
		return &RoundRobin{}, nil
	case "leastconn":
		return &LeastConn{}, nil
	}
	return nil, fmt.Errorf("lb: policy %q is not one of roundrobin, leastconn", name)
}

// RoundRobin hands connections to candidates in turn.
type RoundRobin struct {
	next atomic.Uint64
}

// Select implements Policy.
func (r *RoundRobin) Select(c []*Backend) *Backend {
	if len(c) == 0 {
		return nil
	}
	return c[(r.next.Add(1)-1)%uint64(len(c))]
}

// LeastConn picks the candidate with the fewest active sessions; ties go
// round robin, so an idle pool is still spread evenly.
type LeastConn struct {
	next atomic.Uint64
}

// Select implements Policy.
func (l *LeastConn) Select(c []*Backend) *Backend {
	if len(c) == 0 {
		return nil
	}
	start := int((l.next.Add(1) - 1) % uint64(len(c)))
	best := c[start]
	bestN := best.active.Load()
	for i := 1; i < len(c); i++ {
		b := c[(start+i)%len(c)]
		if n := b.active.Load(); n < bestN {
			best, bestN = b, n
		}
	}
	return best
}
