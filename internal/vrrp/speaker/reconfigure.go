package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/haplane/haplane/internal/vrrp"
)

// reconfReq is one Reconfigure call waiting for the loop.
type reconfReq struct {
	cfg  Config
	done chan error
}

// destinations are where adverts go: the unicast peers, or the VRRP
// multicast group of the address family.
func destinations(c Config) []netip.Addr {
	if len(c.Peers) > 0 {
		return slices.Clone(c.Peers)
	}
	if c.VRRP.Primary.Is6() {
		return []netip.Addr{vrrp.GroupV6}
	}
	return []netip.Addr{vrrp.GroupV4}
}

// Reconfigure applies next to the running speaker without leaving the
// virtual router: the priority, advertisement interval, preemption and
// VRRPv2 password go to the state machine (see vrrp.Machine.Reconfigure:
// a master advertises the change at once), the unicast peers take the
// next advert, and so do the write timeout, release delay and address
// lifetime (a master renews with the new one at once). The tracked
// checks, announcement settings, logger and metrics stay those of New.
// A change the router cannot take (VRID, version, addresses) is refused
// with an error wrapping vrrp.ErrRestartNeeded and changes nothing.
//
// Reconfigure waits for Run's loop; it fails with ctx's error if Run is
// not running.
func (s *Speaker) Reconfigure(ctx context.Context, next Config) error {
	next.Tracks, next.Logger, next.Metrics = slices.Clone(s.cfg.Tracks), s.cfg.Logger, s.cfg.Metrics
	next.AnnounceBurst, next.AnnounceSpacing, next.AnnounceRepeat = s.cfg.AnnounceBurst, s.cfg.AnnounceSpacing, s.cfg.AnnounceRepeat
	next.Peers = slices.Clone(next.Peers)
	if err := next.validate(); err != nil {
		return err
	}
	req := reconfReq{cfg: next, done: make(chan error, 1)}
	select {
	case s.reconf <- req:
	case <-ctx.Done():
		return fmt.Errorf("speaker: reconfigure: %w", ctx.Err())
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("speaker: reconfigure: %w", ctx.Err())
	}
}

// applyReconfigure runs on the loop: cstate is the tracked checks' state,
// apply carries out the machine's output.
func (s *Speaker) applyReconfigure(next Config, cstate []vrrp.CheckState, apply func(vrrp.Output)) error {
	for _, p := range next.Peers {
		if p.Is4() != next.VRRP.Primary.Is4() {
			return fmt.Errorf("speaker: peer %v and primary %v are of different families", p, next.VRRP.Primary)
		}
	}
	if (len(next.Peers) > 0) != (len(s.cfg.Peers) > 0) && s.cfg.VRRP.Primary.Is6() {
		return errors.New("speaker: unicast peers are supported over IPv4 only")
	}
	prio := s.effective(next.VRRP.Priority, cstate)
	o, err := s.m.Reconfigure(time.Now(), next.VRRP, prio)
	if err != nil {
		return fmt.Errorf("speaker: reconfigure: %w", err)
	}
	peersChanged := !slices.Equal(next.Peers, s.cfg.Peers)
	s.cfg.VRRP, s.cfg.Peers = next.VRRP, next.Peers
	s.cfg.WriteTimeout, s.cfg.ReleaseDelay, s.cfg.ShutdownTimeout = next.WriteTimeout, next.ReleaseDelay, next.ShutdownTimeout
	s.cfg.TakeoverHold, s.cfg.AddressLifetime = next.TakeoverHold, next.AddressLifetime
	s.dsts = destinations(s.cfg)
	if peersChanged {
		s.log.Info("vrrp peers changed", "peers", s.dsts)
	}
	if o.Reason != "" {
		s.cfg.Metrics.Priority(prio)
	}
	s.setStatus(func(st *Status) {
		st.AdvertInterval, st.Preempt = next.VRRP.AdvertInterval.String(), next.VRRP.Preempt
	})
	apply(o)
	return nil
}

// effective is base adjusted by the tracked checks that are down or up.
func (s *Speaker) effective(base uint8, cstate []vrrp.CheckState) uint8 {
	tracked := make([]vrrp.Tracked, len(cstate))
	for i, c := range cstate {
		tracked[i] = vrrp.Tracked{Weight: s.cfg.Tracks[i].Weight, Down: c.Down}
	}
	return vrrp.EffectivePriority(base, tracked)
}
