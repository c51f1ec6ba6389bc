package vrrp

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrRestartNeeded marks a reconfiguration the running router cannot take:
// its identity on the wire changed (version, VRID, primary address,
// virtual addresses) or it would become or stop being the address owner.
var ErrRestartNeeded = errors.New("vrrp: restart needed")

// Reconfigure is a configuration-changed event (a reloaded cluster file).
// next replaces the configuration; prio is the effective priority that
// goes with it (next.Priority adjusted by tracking, as SetPriority takes).
//
// What a running router can change: its priority, the advertisement
// interval, preemption and its delay (still counted from Start), and the
// VRRPv2 password. A master advertises at once, so the backups learn the
// new priority and interval (VRRPv3 backups time the master with the
// interval it sends) without waiting a whole old interval. A backup that
// now outranks the master and may preempt takes over when the
// Master_Down_Timer runs out, as for any lower-priority master.
//
// A change of identity (version, VRID, primary, virtual addresses, owner
// status) is refused with ErrRestartNeeded and changes nothing.
func (m *Machine) Reconfigure(now time.Time, next Config, prio uint8) (Output, error) {
	from := m.state
	next.Addrs = slices.Clone(next.Addrs)
	if err := next.validate(); err != nil {
		return m.out(nil, from, ""), err
	}
	var fixed []string
	if next.Version != m.cfg.Version {
		fixed = append(fixed, "version")
	}
	if next.VRID != m.cfg.VRID {
		fixed = append(fixed, "vrid")
	}
	if next.Primary != m.cfg.Primary {
		fixed = append(fixed, "primary address")
	}
	if !slices.Equal(next.Addrs, m.cfg.Addrs) {
		fixed = append(fixed, "virtual addresses")
	}
	if (next.Priority == PriorityOwner) != (m.cfg.Priority == PriorityOwner) {
		fixed = append(fixed, "address owner (priority 255)")
	}
	if len(fixed) > 0 {
		return m.out(nil, from, ""), fmt.Errorf("%w: %s changed", ErrRestartNeeded, strings.Join(fixed, ", "))
	}
	if prio == PriorityStop || (next.Priority == PriorityOwner && prio != PriorityOwner) {
		return m.out(nil, from, ""), fmt.Errorf("vrrp: reconfigure: effective priority %d with base %d", prio, next.Priority)
	}

	var changed []string
	if next.Priority != m.cfg.Priority || prio != m.prio {
		changed = append(changed, fmt.Sprintf("priority %d→%d", m.prio, prio))
	}
	if next.AdvertInterval != m.cfg.AdvertInterval {
		changed = append(changed, fmt.Sprintf("advert interval %v→%v", m.cfg.AdvertInterval, next.AdvertInterval))
	}
	if next.Preempt != m.cfg.Preempt || next.PreemptDelay != m.cfg.PreemptDelay {
		changed = append(changed, fmt.Sprintf("preempt %v/%v→%v/%v", m.cfg.Preempt, m.cfg.PreemptDelay, next.Preempt, next.PreemptDelay))
	}
	if next.AuthType != m.cfg.AuthType || next.AuthData != m.cfg.AuthData {
		changed = append(changed, "authentication")
	}
	if len(changed) == 0 {
		return m.out(nil, from, ""), nil
	}
	intervalChanged := next.AdvertInterval != m.cfg.AdvertInterval
	m.cfg, m.prio = next, prio
	if !m.started.IsZero() {
		m.preemptAfter = m.started.Add(next.PreemptDelay)
	}
	reason := "reconfigured: " + strings.Join(changed, ", ")
	switch m.state {
	case Master:
		// Our own interval is Master_Adver_Interval for the backups; they
		// learn it (and the priority) from this advert.
		m.masterAdverInterval = next.AdvertInterval
		m.adverTimer = now.Add(next.AdvertInterval)
		return m.out([]Action{{Kind: SendAdvert, Priority: m.prio}}, from, reason), nil
	case Backup:
		if intervalChanged && m.cfg.Version == 2 {
			// VRRPv2 never learns the interval: it is the configured one.
			m.masterAdverInterval = next.AdvertInterval
		}
	default:
		m.masterAdverInterval = next.AdvertInterval
	}
	return m.out(nil, from, reason), nil
}
