package lb

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// tunables are the settings Reconfigure changes while the load balancer
// runs. They are read once per connection attempt (policy, dialer,
// suspectFor), per session (idle) or per health change (drain), so a
// change never touches a session already established.
type tunables struct {
	policyName string
	policy     Policy
	dialer     net.Dialer
	suspectFor time.Duration
	drain      time.Duration
	idle       time.Duration
	handshake  time.Duration // negative: no replay
}

func newTunables(cfg Config) (*tunables, error) {
	pol, err := NewPolicy(cfg.Policy)
	if err != nil {
		return nil, err
	}
	return &tunables{
		policyName: cfg.Policy,
		policy:     pol,
		dialer:     net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: cfg.KeepAlive},
		suspectFor: cfg.SuspectFor,
		drain:      cfg.Drain,
		idle:       cfg.IdleTimeout,
		handshake:  cfg.HandshakeTimeout,
	}, nil
}

// ErrRestartNeeded marks a Reconfigure that left some changes unapplied
// because they belong to the listening sockets; the rest was applied.
var ErrRestartNeeded = errors.New("lb: restart needed")

// Reconfigure applies next to the running load balancer without dropping
// a session: the policy, connect timeout and suspect period take effect
// on the next connection, the idle timeout on sessions that start after
// it, the drain period on the next backend that goes down, and the
// backends as SetBackends. Frontends, FreeBind, ReusePort and KeepAlive
// are properties of the listening sockets: when they differ, the rest is
// applied and the error wraps ErrRestartNeeded and names them. Logger and
// Registerer are ignored. An invalid next changes nothing.
func (l *LB) Reconfigure(next Config) error {
	next.setDefaults()
	if err := next.validate(); err != nil {
		return err
	}
	tun, err := newTunables(next)
	if err != nil {
		return err
	}
	old := l.tun.Load()
	if old.policyName == tun.policyName {
		// Keep the policy's state: a round robin does not restart at the
		// first backend on every reload.
		tun.policy = old.policy
	}
	l.tun.Store(tun)
	l.SetBackends(next.Backends)
	if tun.policyName != old.policyName || tun.dialer.Timeout != old.dialer.Timeout || tun.suspectFor != old.suspectFor ||
		tun.drain != old.drain || tun.idle != old.idle || tun.handshake != old.handshake {
		l.cfg.Logger.Info("lb: reconfigured", "policy", tun.policyName, "connect_timeout", tun.dialer.Timeout,
			"suspect_for", tun.suspectFor, "drain", tun.drain, "idle_timeout", tun.idle, "handshake_timeout", tun.handshake)
	}
	var fixed []string
	if !slices.Equal(l.cfg.Frontends, next.Frontends) {
		fixed = append(fixed, "frontends")
	}
	if l.cfg.FreeBind != next.FreeBind {
		fixed = append(fixed, "freebind")
	}
	if l.cfg.ReusePort != next.ReusePort {
		fixed = append(fixed, "reuseport")
	}
	if l.cfg.KeepAlive != next.KeepAlive {
		fixed = append(fixed, "keepalive")
	}
	if len(fixed) > 0 {
		return fmt.Errorf("%w for %v", ErrRestartNeeded, fixed)
	}
	return nil
}

// Policy returns the name of the selection policy in use.
func (l *LB) Policy() string { return l.tun.Load().policyName }
