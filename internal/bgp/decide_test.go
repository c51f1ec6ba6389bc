package bgp

import "testing"

func TestDecide(t *testing.T) {
	cases := []struct {
		announced bool
		in        Inputs
		want      Action
	}{
		{false, Inputs{Health: Ready}, Announce},
		{true, Inputs{Health: Ready}, None},
		{true, Inputs{Health: Down}, Withdraw},
		{false, Inputs{Health: Down}, None},
		// A graceful stop withdraws even a healthy node's route.
		{true, Inputs{Health: Ready, Stopping: true}, Withdraw},
		{false, Inputs{Health: Ready, Stopping: true}, None},
		{true, Inputs{Stopping: true}, Withdraw},
		// Maintenance withdraws a healthy node's route and keeps it away.
		{true, Inputs{Health: Ready, Paused: true}, Withdraw},
		{false, Inputs{Health: Ready, Paused: true}, None},
		{false, Inputs{Health: Down, Paused: true}, None},
		// Panic keeps a route a peer holds and never starts one; a route
		// no peer holds leaves the table, so a session that comes back
		// does not get it.
		{true, Inputs{Health: Panic, Held: true}, None},
		{false, Inputs{Health: Panic, Held: true}, None},
		{false, Inputs{Health: Panic}, None},
		{true, Inputs{Health: Panic}, Withdraw},
		{true, Inputs{Health: Panic, Held: true, Stopping: true}, Withdraw},
		{true, Inputs{Health: Panic, Held: true, Paused: true}, Withdraw},
	}
	for _, tc := range cases {
		if got := Decide(tc.announced, tc.in); got != tc.want {
			t.Errorf("Decide(%v, %+v) = %s, want %s", tc.announced, tc.in, got, tc.want)
		}
	}
}
