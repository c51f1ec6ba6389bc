package vrrp

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// lan simulates routers on one link with a virtual clock: adverts reach
// every router in the same partition after latency. It checks the protocol
// properties end to end without sockets.
type lan struct {
	t       *testing.T
	now     time.Time
	routers []*simRouter
	latency time.Duration
	// inflight adverts, delivered in order of arrival.
	inflight []simMsg
	// log of master sets over time, for the assertions.
	masters func() []int
}

type simRouter struct {
	m        *Machine
	addr     netip.Addr
	deadline time.Time
	alive    bool
	part     int // routers hear each other only within one partition
	holds    bool
	// announced records when the router announced the VIP.
	announced []time.Time
}

type simMsg struct {
	at   time.Time
	from int
	p    Packet
}

func newLAN(t *testing.T, prios ...uint8) *lan {
	l := &lan{t: t, now: t0, latency: time.Millisecond}
	for i, p := range prios {
		c := cfg3(p, i+1)
		l.routers = append(l.routers, &simRouter{m: newM(t, c), addr: c.Primary, alive: true})
	}
	return l
}

func (l *lan) apply(i int, o Output) {
	r := l.routers[i]
	r.deadline = o.Deadline
	for _, a := range o.Actions {
		switch a.Kind {
		case SendAdvert:
			p := *r.m.Advert(a.Priority)
			l.inflight = append(l.inflight, simMsg{at: l.now.Add(l.latency), from: i, p: p})
		case TakeAddrs:
			r.holds = true
		case ReleaseAddrs:
			r.holds = false
		case Announce:
			r.announced = append(r.announced, l.now)
		}
	}
}

func (l *lan) start() {
	for i, r := range l.routers {
		l.apply(i, r.m.Start(l.now))
	}
}

// run advances the clock to until, in steps of the next event.
func (l *lan) run(until time.Time) {
	for {
		next := until
		for _, r := range l.routers {
			if r.alive && !r.deadline.IsZero() && r.deadline.Before(next) {
				next = r.deadline
			}
		}
		for _, m := range l.inflight {
			if m.at.Before(next) {
				next = m.at
			}
		}
		l.now = next
		if !l.now.Before(until) {
			return
		}
		for len(l.inflight) > 0 && !l.inflight[0].at.After(l.now) {
			msg := l.inflight[0]
			l.inflight = l.inflight[1:]
			for i, r := range l.routers {
				if i != msg.from && r.alive && r.part == l.routers[msg.from].part {
					p := msg.p
					l.apply(i, r.m.Receive(l.now, l.routers[msg.from].addr, TTL, &p))
				}
			}
		}
		for i, r := range l.routers {
			if r.alive && !r.deadline.IsZero() && !r.deadline.After(l.now) {
				l.apply(i, r.m.Tick(l.now))
			}
		}
	}
}

func (l *lan) holders() []int {
	var h []int
	for i, r := range l.routers {
		if r.holds {
			h = append(h, i)
		}
	}
	return h
}

// untilSingle runs until exactly want holds the VIP alone, and returns how
// long that took; it fails if it takes longer than limit.
func (l *lan) untilSingle(want int, limit time.Duration) time.Duration {
	l.t.Helper()
	start := l.now
	for l.now.Sub(start) <= limit {
		if h := l.holders(); slices.Equal(h, []int{want}) {
			return l.now.Sub(start)
		}
		l.run(l.now.Add(time.Millisecond))
	}
	l.t.Fatalf("after %v holders are %v, want only %d", limit, l.holders(), want)
	return 0
}

func TestSimulatedLink(t *testing.T) {
	iv := 100 * ms
	t.Run("§6.4.2 the highest priority becomes the only master", func(t *testing.T) {
		l := newLAN(t, 148, 150, 149)
		l.start()
		l.untilSingle(1, 400*ms)
		l.run(l.now.Add(5 * time.Second))
		if h := l.holders(); !slices.Equal(h, []int{1}) {
			t.Fatalf("holders after 5s: %v", h)
		}
	})
	t.Run("master dies: the next priority takes over within Master_Down_Interval", func(t *testing.T) {
		l := newLAN(t, 150, 149, 148)
		l.start()
		l.untilSingle(0, time.Second)
		l.run(l.now.Add(time.Second))
		l.routers[0].alive, l.routers[0].holds = false, false
		took := l.untilSingle(1, time.Second)
		if max := 3*iv + 107*iv/256 + 3*ms; took > max {
			t.Errorf("takeover took %v, want ≤ %v", took, max)
		}
	})
	t.Run("§6.4.2 master shuts down: backup takes over after Skew_Time only", func(t *testing.T) {
		l := newLAN(t, 150, 149, 148)
		l.start()
		l.untilSingle(0, time.Second)
		l.run(l.now.Add(time.Second))
		l.apply(0, l.routers[0].m.Shutdown(l.now))
		l.routers[0].alive = false
		took := l.untilSingle(1, time.Second)
		if max := 107*iv/256 + 3*ms; took > max {
			t.Errorf("takeover took %v, want ≤ Skew_Time %v", took, max)
		}
	})
	t.Run("partition then heal: one master within one interval, winner announces", func(t *testing.T) {
		l := newLAN(t, 150, 149, 148)
		l.start()
		l.untilSingle(0, time.Second)
		l.routers[0].part = 1
		l.run(l.now.Add(2 * time.Second))
		if h := l.holders(); !slices.Equal(h, []int{0, 1}) {
			t.Fatalf("partitioned holders %v, want [0 1]", h)
		}
		l.routers[0].part = 0
		healed := l.now
		nAnn := len(l.routers[0].announced)
		took := l.untilSingle(0, time.Second)
		if took > iv+2*ms {
			t.Errorf("dual master lasted %v after heal, want ≤ one interval %v", took, iv)
		}
		l.run(l.now.Add(iv))
		if len(l.routers[0].announced) == nAnn || l.routers[0].announced[nAnn].Sub(healed) > iv+2*ms {
			t.Errorf("winner did not re-announce within an interval of the heal: %v", l.routers[0].announced[nAnn:])
		}
	})
	t.Run("no preempt: a returning higher priority stays backup", func(t *testing.T) {
		l := newLAN(t, 150, 149)
		for _, r := range l.routers {
			r.m.cfg.Preempt = false
		}
		l.start()
		l.untilSingle(0, time.Second)
		l.routers[0].alive, l.routers[0].holds = false, false
		l.untilSingle(1, time.Second)
		l.routers[0].alive = true
		l.routers[0].m.Shutdown(l.now)
		l.apply(0, l.routers[0].m.Start(l.now))
		l.run(l.now.Add(3 * time.Second))
		if h := l.holders(); !slices.Equal(h, []int{1}) {
			t.Fatalf("holders %v, want [1]", h)
		}
	})
}
