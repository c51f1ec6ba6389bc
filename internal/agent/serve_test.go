package agent

import (
	"testing"

	"github.com/haplane/haplane/internal/health"
	"github.com/haplane/haplane/internal/lb"
)

func TestServeVerdict(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		ready, live          int
		localReady           bool
		wantServe, wantLocal bool
	}{
		{"all ready", 3, 3, true, true, true},
		{"local apiserver dead, others ready: hand the VIP over", 2, 2, false, true, false},
		{"etcd quorum lost: none ready, all live: stay", 0, 3, false, true, true},
		{"every apiserver stalled: none ready nor live: nobody serves better", 0, 0, false, false, true},
		{"recovery, another ready first: the local one lags", 1, 3, false, true, false},
		{"only the local one ready", 1, 1, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serve, local := ServeVerdict(tc.ready, tc.live, tc.localReady)
			if serve != tc.wantServe || local != tc.wantLocal {
				t.Fatalf("ServeVerdict(%d, %d, %v) = %v, %v; want %v, %v", tc.ready, tc.live, tc.localReady, serve, local, tc.wantServe, tc.wantLocal)
			}
		})
	}
}

func TestLBHealth(t *testing.T) {
	for _, tc := range []struct {
		ready, live health.Status
		want        lb.Health
		ok          bool
	}{
		{health.Up, health.Up, lb.HealthUp, true},
		{health.Down, health.Up, lb.HealthLive, true},
		{health.Down, health.Down, lb.HealthDown, true},
		{health.Down, health.Unknown, lb.HealthDown, true},
		{health.Unknown, health.Unknown, lb.HealthUnknown, false},
	} {
		if got, ok := LBHealth(tc.ready, tc.live); got != tc.want || ok != tc.ok {
			t.Errorf("LBHealth(%v, %v) = %v, %v; want %v, %v", tc.ready, tc.live, got, ok, tc.want, tc.ok)
		}
	}
}
