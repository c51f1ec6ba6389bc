package lab

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var updateReport = flag.Bool("update", false, "rewrite the golden files under testdata (report, plans)")

// probes makes one Sample every 10ms over [0, end): outcome says how the
// probe at a given instant went.
func probes(end time.Duration, outcome func(at time.Duration) Sample) Observation {
	var o Observation
	for at := time.Duration(0); at < end; at += 10 * time.Millisecond {
		s := outcome(at)
		s.At = at
		o.Samples = append(o.Samples, s)
		o.Requests++
		if !s.OK {
			o.Failed++
		}
		if s.Latency > time.Second {
			o.Slow++
		}
	}
	return o
}

// testReport is a run with a passing VIP failover, a failing partition
// (lost writes, two VIP holders at once) and a skipped scenario.
func testReport() *Report {
	const ms, sec = time.Millisecond, time.Second
	ok := Sample{OK: true, Latency: 8 * ms}
	failover := probes(12*sec, func(at time.Duration) Sample {
		switch {
		case at >= 1020*ms && at < 2380*ms:
			return Sample{Latency: 3 * ms, Err: "dial tcp 10.77.0.100:6443: connect: no route to host"}
		case at >= 2380*ms && at < 2410*ms:
			return Sample{OK: true, Latency: 1200 * ms}
		}
		return ok
	})
	failover.MaxGap = 1410 * ms
	failover.Writes = 120
	failover.Leases = map[string][]Mark{
		"kube-scheduler":          {{At: 0, Value: "cp1_3f2a9c1e-5b7d-4c1a-9e0f-2d6b8a7c4e31"}},
		"kube-controller-manager": {{At: 0, Value: "cp2_88ab41f0-0c2e-4d5f-b1a3-6e9d7f2c5a10"}},
	}

	partition := probes(40*sec, func(at time.Duration) Sample {
		switch {
		case at >= 10*sec && at < 13500*ms:
			return Sample{Latency: 2 * ms, Err: "read tcp 10.77.0.50:41712->10.77.0.100:6443: read: connection reset by peer"}
		case at >= 25*sec && at < 25600*ms:
			return Sample{Latency: 10 * ms, Err: "net/http: TLS handshake timeout"}
		}
		return ok
	})
	partition.MaxGap = 3510 * ms
	partition.Writes, partition.WriteErrors, partition.Lost = 300, 14, 2
	partition.Leases = map[string][]Mark{
		"kube-scheduler": {
			{At: 0, Value: "cp1_3f2a9c1e-5b7d-4c1a-9e0f-2d6b8a7c4e31"},
			{At: 18 * sec, Value: "nobody"},
			{At: 24200 * ms, Value: "cp3_0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"},
		},
		"kube-controller-manager": {
			{At: 0, Value: "cp1_77c0ffee-1234-4abc-9def-0123456789ab"},
			{At: 25100 * ms, Value: "cp2_88ab41f0-0c2e-4d5f-b1a3-6e9d7f2c5a10"},
		},
	}

	return &Report{
		Started:  time.Date(2025, 6, 1, 14, 30, 0, 0, time.UTC),
		Endpoint: "https://10.77.0.100:6443",
		Nodes:    3,
		Topology: "stacked",
		Scenarios: []ScenarioResult{
			{
				Name:        "vip-holder-agent-kill",
				Description: "kill -9 the agent on the VIP holder; another node must take the VIP over.",
				Stack:       "haplane",
				Backend:     "kube",
				Target:      "cp1",
				Duration:    12 * sec,
				Events: []Event{
					{At: 1 * sec, What: "kill -9 agent on cp1"},
					{At: 5 * sec, What: "restart agent on cp1"},
				},
				VIPHolder: []Mark{{At: 0, Value: "cp1"}, {At: 1050 * ms, Value: "nobody"}, {At: 2350 * ms, Value: "cp2"}},
				Observed:  failover,
				Pass:      true,
				MaxGapW:   3 * sec,
				Verdict:   "pass: longest gap 1.41s, 136 of 1200 probes failed, 120 writes acknowledged, none lost",
			},
			{
				Name:        "partition-heal",
				Description: "cut cp1 off from cp2 and cp3 for 15s, then heal the partition.",
				Stack:       "classic",
				Backend:     "kube",
				Target:      "cp1",
				Duration:    40 * sec,
				Events: []Event{
					{At: 10 * sec, What: "partition cp1 from cp2, cp3"},
					{At: 25 * sec, What: "heal partition"},
					{At: 26 * sec, What: "restart keepalived on cp1"},
					{At: 39 * sec, What: "read back 300 writes"},
				},
				VIPHolder: []Mark{{At: 0, Value: "cp1"}, {At: 10200 * ms, Value: "cp1+cp2"}, {At: 25300 * ms, Value: "cp2"}},
				Observed:  partition,
				LeaseTakeover: map[string]time.Duration{
					"kube-scheduler":          14200 * ms,
					"kube-controller-manager": 15100 * ms,
				},
				MaxGapW: 3 * sec,
				Verdict: "fail: 2 acknowledged writes lost; longest gap 3.51s > 3s",
			},
			{
				Name:        "scheduler-leader-kill",
				Description: "kill -9 the kube-scheduler that holds its leader Lease.",
				Stack:       "haplane",
				Backend:     "stub",
				Skipped:     "leader Leases need the kube backend",
			},
		},
	}
}

// golden compares got with testdata/report/name, or rewrites the file
// with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "report", name)
	if *updateReport {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update to accept); got:\n%s", path, got)
	}
}

func renderHTML(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func renderTable(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestWriteHTMLGolden(t *testing.T) {
	got := renderHTML(t, testReport())
	golden(t, "chaos.html", []byte(got))
	if again := renderHTML(t, testReport()); again != got {
		t.Error("WriteHTML is not deterministic")
	}
}

func TestWriteTableGolden(t *testing.T) {
	golden(t, "chaos.txt", []byte(renderTable(t, testReport())))
}

func TestReportHTMLOneSVGPerRunScenario(t *testing.T) {
	html := renderHTML(t, testReport())
	if n := strings.Count(html, "<svg"); n != 2 {
		t.Errorf("%d <svg, want 2 (one per scenario that ran)", n)
	}
	if !strings.Contains(html, "Skipped: leader Leases need the kube backend") {
		t.Error("the skipped scenario does not say why")
	}
	// html/template writes the "+" of a dual holder as &#43;.
	for _, want := range []string{">cp1&#43;cp2<", ">kill -9 agent on cp1<", ">scheduler lease<", ">controller-manager lease<", ">cp3<"} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	// The whole identity belongs in the tooltip only.
	if strings.Contains(html, `">cp3_0d1e`) {
		t.Error("a Lease holder is labeled with its whole identity, not its host")
	}
}

func TestReportHTMLEscapes(t *testing.T) {
	const hostile = "<script>x</script>"
	r := testReport()
	sc := &r.Scenarios[0]
	sc.Target = hostile
	sc.VIPHolder[0].Value = hostile
	sc.Events[0].What = hostile
	sc.Observed.Samples[150].Err = hostile // a failed one
	html := renderHTML(t, r)
	if strings.Contains(html, "<script") {
		t.Error("a string from the report reached the page unescaped")
	}
	if n := strings.Count(html, "&lt;script&gt;x&lt;/script&gt;"); n < 4 {
		t.Errorf("the hostile string appears escaped %d times, want at least 4 (target, holder, event, error)", n)
	}
}

func TestWriteTableFailRow(t *testing.T) {
	table := renderTable(t, testReport())
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want a header and 3 rows:\n%s", len(lines), table)
	}
	for _, col := range []string{"SCENARIO", "LONGEST GAP", "LEASE TAKEOVER", "WRITES", "RESULT"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header lacks %s: %q", col, lines[0])
		}
	}
	fail := lines[2]
	for _, want := range []string{"partition-heal", "FAIL", "300 acked, 2 lost, 14 refused", "3510ms",
		"controller-manager 15.1s, scheduler 14.2s"} {
		if !strings.Contains(fail, want) {
			t.Errorf("failing row lacks %q: %q", want, fail)
		}
	}
	if !strings.Contains(lines[1], "PASS") || !strings.HasSuffix(lines[3], "SKIPPED: leader Leases need the kube backend") {
		t.Errorf("PASS / SKIPPED rows wrong:\n%s", table)
	}
}
