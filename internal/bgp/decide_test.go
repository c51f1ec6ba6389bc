package bgp

import "testing"

func TestDecide(t *testing.T) {
	cases := []struct {
		announced bool
		in        Inputs
		want      Action
	}{
		{false, Inputs{Healthy: true}, Announce},
		{true, Inputs{Healthy: true}, None},
		{true, Inputs{Healthy: false}, Withdraw},
		{false, Inputs{Healthy: false}, None},
		// A graceful stop withdraws even a healthy node's route.
		{true, Inputs{Healthy: true, Stopping: true}, Withdraw},
		{false, Inputs{Healthy: true, Stopping: true}, None},
		{true, Inputs{Stopping: true}, Withdraw},
		// Maintenance withdraws a healthy node's route and keeps it away.
		{true, Inputs{Healthy: true, Paused: true}, Withdraw},
		{false, Inputs{Healthy: true, Paused: true}, None},
		{false, Inputs{Healthy: false, Paused: true}, None},
	}
	for _, tc := range cases {
		if got := Decide(tc.announced, tc.in); got != tc.want {
			t.Errorf("Decide(%v, %+v) = %s, want %s", tc.announced, tc.in, got, tc.want)
		}
	}
}
