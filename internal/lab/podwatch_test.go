package lab

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPodWatchOf: the watcher's log against the acknowledged writes: the
// longest delay, the missed writes and the reconnects in the scenario.
func TestPodWatchOf(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	acked := []Mark{{At: 100 * time.Millisecond, Value: "w0"}, {At: 200 * time.Millisecond, Value: "w1"}, {At: 300 * time.Millisecond, Value: "w2"}}
	for _, tc := range []struct {
		name string
		log  string
		want PodWatch
	}{
		{"every write seen at once", fmt.Sprintf("%d ADDED w0\n%d ADDED w1\n%d ADDED w2\n", at(105*time.Millisecond), at(203*time.Millisecond), at(301*time.Millisecond)),
			PodWatch{Writes: 3, MaxDelay: 5 * time.Millisecond, Worst: "w0"}},
		{"a reconnect, w1 late, seen again on the relist", fmt.Sprintf("%d ADDED w0\n%d RETRY watch: stream ended\n%d ADDED w1\n%d ADDED w0\n%d ADDED w2\n",
			at(101*time.Millisecond), at(150*time.Millisecond), at(900*time.Millisecond), at(900*time.Millisecond), at(901*time.Millisecond)),
			PodWatch{Writes: 3, MaxDelay: 700 * time.Millisecond, Worst: "w1", Retries: 1}},
		{"a write never seen, an event before its acknowledgement, noise", fmt.Sprintf("labpod: starting\n%d ADDED w0\n%d MODIFIED w2\n%d RETRY before the scenario\n",
			at(90*time.Millisecond), at(310*time.Millisecond), at(-time.Second)),
			PodWatch{Writes: 3, Missed: 1, MaxDelay: 10 * time.Millisecond, Worst: "w2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := podWatchOf(t0, t0.Add(10*time.Second), acked, parseWatchLog([]byte(tc.log)))
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestWatcherManifest: the pod runs on the worker in the host's network
// (the node-local load balancer listens on its loopback) with its own
// service account, allowed only to read ConfigMaps.
func TestWatcherManifest(t *testing.T) {
	m := watcherManifest("https://127.0.0.1:6443", "10.77.0.100")
	for _, want := range []string{"nodeName: " + WorkerName, "hostNetwork: true", "serviceAccountName: " + WatcherName,
		`args: [watch, "https://127.0.0.1:6443", "10.77.0.100", default, "haplane.dev/chaos-run"]`, "verbs: [get, list, watch]"} {
		if !strings.Contains(m, want) {
			t.Errorf("manifest lacks %q:\n%s", want, m)
		}
	}
}
