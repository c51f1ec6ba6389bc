package lab

import (
	"maps"
	"strings"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	quorum := scenario{name: "q", maxGap: 16 * time.Second, alsoPath: "/livez?exclude=etcd", alsoMaxGap: time.Second}
	plain := scenario{name: "p", maxGap: time.Second}
	lease := scenario{name: "l", maxGap: time.Second, lease: "kube-scheduler"}
	upgrade := scenario{name: "u", maxGap: 500 * time.Millisecond, noFailures: true, alsoPath: "/livez?exclude=etcd", alsoMaxGap: 500 * time.Millisecond}
	local := func(failed int) PathObservation {
		return PathObservation{Path: "/readyz", Endpoint: "https://127.0.0.1:6443", Requests: 900, Failed: failed, MaxGap: 30 * time.Millisecond}
	}
	livez := func(gap time.Duration) []PathObservation {
		return []PathObservation{{Path: "/livez?exclude=etcd", Requests: 900, Failed: 1, MaxGap: gap}}
	}
	for _, tc := range []struct {
		name     string
		s        scenario
		obs      Observation
		takeover time.Duration
		pass     bool
		verdict  string // a part of the verdict
	}{
		{"plain pass", plain, Observation{Requests: 500, Failed: 3, MaxGap: 200 * time.Millisecond, Writes: 40}, 0, true, "pass: longest gap 200ms, 3 of 500 probes failed, 40 writes acknowledged, none lost"},
		{"gap over the bound", plain, Observation{MaxGap: 1500 * time.Millisecond}, 0, false, "longest gap 1.5s > 1s"},
		{"a lost write fails whatever the gap", plain, Observation{Writes: 10, Lost: 1}, 0, false, "1 acknowledged writes lost"},
		{"readiness outage inside its bound, liveness kept", quorum, Observation{MaxGap: 9 * time.Second, Also: livez(150 * time.Millisecond)}, 0, true, "; /livez?exclude=etcd: longest gap 150ms, 1 of 900 failed"},
		{"liveness lost", quorum, Observation{MaxGap: 9 * time.Second, Also: livez(2 * time.Second)}, 0, false, "/livez?exclude=etcd: longest gap 2s > 1s"},
		{"readiness never back", quorum, Observation{MaxGap: 18 * time.Second, Also: livez(0)}, 0, false, "longest gap 18s > 16s"},
		{"second probe missing", quorum, Observation{MaxGap: time.Second}, 0, false, "no probe of /livez?exclude=etcd"},
		{"upgrade without a failed probe", upgrade, Observation{Requests: 9000, MaxGap: 60 * time.Millisecond, Writes: 900,
			Also: []PathObservation{{Path: "/livez?exclude=etcd", Requests: 4500, MaxGap: 70 * time.Millisecond}, local(0)}}, 0, true, "pass: longest gap 60ms, 0 of 9000"},
		{"upgrade: one failed probe fails it inside the gap bound", upgrade, Observation{Requests: 9000, Failed: 1, MaxGap: 60 * time.Millisecond,
			Also: []PathObservation{{Path: "/livez?exclude=etcd", Requests: 4500}}}, 0, false, "1 of 9000 probes failed (want none)"},
		{"upgrade: a failed liveness probe", upgrade, Observation{Requests: 9000, Also: livez(0)}, 0, false, "/livez?exclude=etcd: 1 of 900 probes failed (want none)"},
		{"upgrade: a failed probe through the node-local LB", upgrade, Observation{Requests: 9000,
			Also: []PathObservation{{Path: "/livez?exclude=etcd", Requests: 4500}, local(2)}}, 0, false, "node-local LB https://127.0.0.1:6443: 2 of 900 probes failed (want none)"},
		{"lease taken over", lease, Observation{}, 18 * time.Second, true, "pass"},
		{"lease never taken over", lease, Observation{}, 0, false, "no new kube-scheduler leader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := &ScenarioResult{Observed: tc.obs}
			if tc.s.lease != "" {
				res.LeaseTakeover = map[string]time.Duration{tc.s.lease: tc.takeover}
			}
			judge(res, tc.s)
			if res.Pass != tc.pass || !strings.Contains(res.Verdict, tc.verdict) {
				t.Fatalf("pass %v, verdict %q; want pass %v with %q", res.Pass, res.Verdict, tc.pass, tc.verdict)
			}
		})
	}
}

func TestSummarizeGapToWindowEdges(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	o := Observation{Samples: []Sample{
		{At: 100 * ms, OK: true, Latency: 10 * ms},
		{At: 200 * ms, OK: false, Latency: 1500 * ms},
		{At: 900 * ms, OK: true, Latency: 20 * ms},
	}}
	summarize(&o, t0, t0.Add(2*time.Second))
	// Answers at 110ms and 920ms; the window ends at 2s: the longest
	// stretch without an answer is the last one, 1080ms.
	if o.Requests != 3 || o.Failed != 1 || o.Slow != 1 || o.MaxGap != 1080*ms {
		t.Fatalf("got %d requests, %d failed, %d slow, gap %s", o.Requests, o.Failed, o.Slow, o.MaxGap)
	}
}

func TestLeaseTakeovers(t *testing.T) {
	s := time.Second
	leases := map[string][]Mark{
		"kube-scheduler":          {{At: 0, Value: "cp1"}, {At: 3 * s, Value: "cp2"}},
		"kube-controller-manager": {{At: 0, Value: "cp2"}},
	}
	for _, tc := range []struct {
		name  string
		fault time.Duration
		own   string
		want  map[string]time.Duration
	}{
		{"a Lease moved by another fault is reported", s, "", map[string]time.Duration{"kube-scheduler": 2 * s}},
		{"the scenario's Lease is reported even unmoved", s, "kube-controller-manager", map[string]time.Duration{"kube-scheduler": 2 * s, "kube-controller-manager": 0}},
		{"a move before the fault is not a takeover", 4 * s, "", nil},
		{"the scenario's Lease never observed", 4 * s, "kube-scheduler", map[string]time.Duration{"kube-scheduler": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := leaseTakeovers(leases, tc.fault, tc.own)
			if !maps.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestJudgeVIP(t *testing.T) {
	ms := func(vals ...string) []Mark {
		var out []Mark
		for i, v := range vals {
			out = append(out, Mark{At: time.Duration(i) * time.Second, Value: v})
		}
		return out
	}
	stays := scenario{vipStays: true, window: 5 * time.Second}
	leaves := scenario{vipLeavesWithin: 2 * time.Second, window: 5 * time.Second}
	for _, tc := range []struct {
		name    string
		holders []Mark
		s       scenario
		fail    bool
	}{
		{"stays", ms("cp1"), stays, false},
		{"moves", ms("cp1", "cp2"), stays, true},
		{"two holders while it should stay", ms("cp1", "cp1+cp2"), stays, true},
		// fault at 1s: by 3s only cp2, until the heal at 6s.
		{"old copy gone in time", ms("cp1", "cp1+cp2", "cp2", "cp2", "cp2", "cp2", "nobody", "cp1"), leaves, false},
		{"a poll started before the bound is not judged", ms("cp1", "cp1", "cp1+cp2", "cp2"), leaves, false},
		{"old copy still there after 2s", ms("cp1", "cp1+cp2", "cp1+cp2", "cp1+cp2", "cp2"), leaves, true},
		{"nobody after 2s", ms("cp1", "cp1", "cp1", "nobody", "cp2"), leaves, true},
		{"no rules", ms("cp1", "cp2"), scenario{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := judgeVIP(tc.holders, tc.s, "cp1", time.Second)
			if (why != "") != tc.fail {
				t.Fatalf("judgeVIP = %q, want fail %v", why, tc.fail)
			}
		})
	}
}
