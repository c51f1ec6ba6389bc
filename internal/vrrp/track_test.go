package vrrp

import "testing"

func TestHysteresis(t *testing.T) {
	h := Hysteresis{Fall: 3, Rise: 2}
	tests := []struct {
		name    string
		results string // '+' ok, '-' failure
		down    []bool // state after each result
	}{
		{"fall after 3 failures", "---", []bool{false, false, true}},
		{"an ok resets the fall count", "--+--", []bool{false, false, false, false, false}},
		{"rise after 2 successes", "---++", []bool{false, false, true, true, false}},
		{"a failure resets the rise count", "---+-++", []bool{false, false, true, true, true, true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s CheckState
			for i, r := range tc.results {
				s = h.Observe(s, r == '+')
				if s.Down != tc.down[i] {
					t.Fatalf("after %q: down=%v, want %v", tc.results[:i+1], s.Down, tc.down[i])
				}
			}
		})
	}
	// Zero Fall/Rise mean 1.
	if s := (Hysteresis{}).Observe(CheckState{}, false); !s.Down {
		t.Error("zero Fall did not mark down on one failure")
	}
}

func TestEffectivePriority(t *testing.T) {
	tests := []struct {
		name   string
		base   uint8
		checks []Tracked
		want   uint8
	}{
		{"no checks", 150, nil, 150},
		{"negative weight applies when down", 150, []Tracked{{Weight: -60, Down: true}}, 90},
		{"negative weight ignored when up", 150, []Tracked{{Weight: -60}}, 150},
		{"positive weight applies when up", 100, []Tracked{{Weight: 20}}, 120},
		{"positive weight ignored when down", 100, []Tracked{{Weight: 20, Down: true}}, 100},
		{"sum", 150, []Tracked{{Weight: -30, Down: true}, {Weight: -30, Down: true}, {Weight: 10}}, 100},
		{"clamped to 1, never 0 (stop)", 10, []Tracked{{Weight: -50, Down: true}}, 1},
		{"clamped to 254, never 255 (owner)", 250, []Tracked{{Weight: 50}}, 254},
		{"the owner does not track", 255, []Tracked{{Weight: -100, Down: true}}, 255},
	}
	for _, tc := range tests {
		if got := EffectivePriority(tc.base, tc.checks); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
