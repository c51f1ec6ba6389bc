// Package health owns active health checking of load-balancer backends:
// probes (TCP connect, TLS handshake, HTTPS GET of a path expecting a
// status), the pure fall/rise hysteresis that turns probe results into an
// up/down state, and a Checker that probes a set of targets on a ticker and
// reports state changes. It knows nothing of the load balancer or the VIP;
// they consume its Change callback or the Status interface.
package health

import "fmt"

// Status is a target's health as seen by the hysteresis.
type Status int

const (
	// Unknown is a target that has not been probed yet. Consumers treat it
	// as usable: a fresh load balancer should not refuse every client until
	// the first round of probes completes.
	Unknown Status = iota
	// Up is a target that passed Rise consecutive probes (or its first one).
	Up
	// Down is a target that failed Fall consecutive probes (or its first one).
	Down
)

func (s Status) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// MarshalText renders the status as its name in JSON output.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// State is the hysteresis state of one target: its status and the length of
// the current run of results that disagree with it.
type State struct {
	Status Status
	// Streak counts consecutive results that contradict Status (failures
	// while Up, successes while Down). It resets when a result agrees.
	Streak int
}

// Step is the fall/rise hysteresis: given the current state and one probe
// result it returns the next state and whether the status changed. It is
// pure. An Unknown target takes the status of its first result at once,
// so a backend that is dead at start is never offered to clients and a
// live one is confirmed on the first probe. An Up target goes Down after
// fall consecutive failures; a Down target comes Up after rise consecutive
// successes. fall and rise below 1 are treated as 1.
func Step(s State, ok bool, fall, rise int) (next State, changed bool) {
	fall, rise = max(fall, 1), max(rise, 1)
	switch s.Status {
	case Up:
		if ok {
			return State{Status: Up}, false
		}
		if s.Streak+1 >= fall {
			return State{Status: Down}, true
		}
		return State{Status: Up, Streak: s.Streak + 1}, false
	case Down:
		if !ok {
			return State{Status: Down}, false
		}
		if s.Streak+1 >= rise {
			return State{Status: Up}, true
		}
		return State{Status: Down, Streak: s.Streak + 1}, false
	default:
		if ok {
			return State{Status: Up}, true
		}
		return State{Status: Down}, true
	}
}
