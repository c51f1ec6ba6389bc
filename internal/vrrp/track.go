package vrrp

// Hysteresis turns a stream of check results into an up/down state: Fall
// consecutive failures mark an up check down, Rise consecutive successes
// mark a down check up. The zero value of Fall or Rise means 1.
type Hysteresis struct {
	Fall, Rise int
}

// CheckState is the state of one tracked check. The zero value is a check
// that is up and has seen no results.
type CheckState struct {
	Down bool
	// streak counts consecutive results that contradict Down.
	streak int
}

// Observe folds one result into s and returns the new state (a pure
// function: s is not modified).
func (h Hysteresis) Observe(s CheckState, ok bool) CheckState {
	need := max(h.Fall, 1)
	if s.Down {
		need = max(h.Rise, 1)
	}
	if ok != s.Down { // the result agrees with the current state
		s.streak = 0
		return s
	}
	s.streak++
	if s.streak >= need {
		return CheckState{Down: !s.Down}
	}
	return s
}

// Tracked is one tracked check's contribution to the priority, with
// keepalived's sign convention: a positive Weight is added while the check
// is up, a negative Weight is added (so subtracted) while it is down.
type Tracked struct {
	Weight int
	Down   bool
}

// EffectivePriority is base plus the weights of the tracked checks,
// clamped to 1..254 so tracking can neither stop the router (0) nor make
// it the owner (255). The owner (base 255) does not track, as in
// keepalived.
func EffectivePriority(base uint8, checks []Tracked) uint8 {
	if base == PriorityOwner {
		return base
	}
	p := int(base)
	for _, c := range checks {
		switch {
		case c.Weight > 0 && !c.Down, c.Weight < 0 && c.Down:
			p += c.Weight
		}
	}
	return uint8(min(max(p, 1), 254))
}
