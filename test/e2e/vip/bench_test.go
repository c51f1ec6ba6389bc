package vip

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// impl is a VRRP implementation under benchmark.
type impl struct {
	name string
	// start runs the speaker on h at prio; kill9 kills it without a
	// goodbye; term asks it to stop.
	start func(l *lab, h *host, prio int) (p *proc, kill9, term func())
	// interval is its advert interval, for the dual-master bound.
	interval time.Duration
}

func haplaneImpl() impl {
	return impl{name: "haplane v3 100ms (default)", interval: 100 * time.Millisecond,
		start: func(l *lab, h *host, prio int) (*proc, func(), func()) {
			cfg := l.writeConfig(clusterOpts{prios: map[string]int{"h1": 250, "h2": 249, "h3": 248}})
			p := l.startHaplane(h, cfg)
			return p, func() { p.signal(syscall.SIGKILL) }, func() { p.signal(syscall.SIGTERM) }
		}}
}

func keepalivedImpl(name string, version int, interval string, d time.Duration, auth string) impl {
	return impl{name: name, interval: d,
		start: func(l *lab, h *host, prio int) (*proc, func(), func()) {
			k := l.startKeepalived(h, kaOpts{version: version, interval: interval, prio: prio, auth: auth})
			return k.proc, k.die, func() { k.signal(syscall.SIGTERM) }
		}}
}

type benchResult struct {
	impl, scenario string
	vals           []time.Duration // client outage per run
	dual           []time.Duration // longest time two masters overlapped, per run
}

// TestBenchVIPFailover is the benchmark behind bench/vip-failover.sh; it
// runs only when HAPLANE_BENCH_VIP is set (to the number of runs per
// scenario) and prints min/median/max per implementation and scenario.
func TestBenchVIPFailover(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("HAPLANE_BENCH_VIP"))
	if runs <= 0 {
		t.Skip("benchmark: set HAPLANE_BENCH_VIP=N (runs per scenario), or use bench/vip-failover.sh")
	}
	requireRoot(t)
	impls := []impl{haplaneImpl()}
	if os.Getenv("HAPLANE_BENCH_ONLY_HAPLANE") == "" {
		requireKeepalived(t)
		impls = append(impls,
			keepalivedImpl("keepalived v2 1s (kubeadm guide)", 2, "1", time.Second, "42"),
			keepalivedImpl("keepalived v3 100ms", 3, "0.1", 100*time.Millisecond, ""))
	}
	var results []*benchResult
	for _, im := range impls {
		for _, sc := range []string{"kill -9", "link down", "SIGTERM", "partition heal"} {
			r := &benchResult{impl: im.name, scenario: sc}
			results = append(results, r)
			for i := range runs {
				d, dual, err := benchOnce(t, im, sc)
				if err != nil {
					t.Errorf("%s / %s run %d: %v", im.name, sc, i, err)
					continue
				}
				t.Logf("%s / %s run %d: outage %v, two masters for %v", im.name, sc, i, d, dual)
				r.vals, r.dual = append(r.vals, d), append(r.dual, dual)
			}
		}
	}
	fmt.Print(benchTable(results))
}

// benchTable formats the results: the client outage's min/median/max per
// implementation and scenario, how many runs had two masters at once, and
// the longest such overlap.
func benchTable(results []*benchResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-34s %-16s %5s %9s %9s %9s %10s %9s\n", "implementation", "scenario", "runs", "min", "median", "max", "dual runs", "dual max")
	ms := func(d time.Duration) string {
		if d > 0 && d < 10*time.Millisecond {
			return fmt.Sprintf("%.1fms", float64(d)/1e6) // a brief second master is not 0
		}
		return fmt.Sprintf("%.0fms", float64(d)/1e6)
	}
	for _, r := range results {
		if len(r.vals) == 0 {
			continue
		}
		slices.Sort(r.vals)
		n := 0
		for _, d := range r.dual {
			if d > 0 {
				n++
			}
		}
		fmt.Fprintf(&b, "%-34s %-16s %5d %9s %9s %9s %10s %9s\n", r.impl, r.scenario, len(r.vals),
			ms(r.vals[0]), ms(r.vals[len(r.vals)/2]), ms(r.vals[len(r.vals)-1]),
			fmt.Sprintf("%d/%d", n, len(r.dual)), ms(slices.Max(r.dual)))
	}
	return b.String()
}

// span is a time during which a speaker was master.
type span struct{ from, to time.Time }

// masterSpans returns the spans within [from, to] during which p's log
// says it was master.
func (p *proc) masterSpans(from, to time.Time) []span {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []span
	var since time.Time // zero: not master
	end := func(at time.Time) {
		if !since.IsZero() {
			if s := (span{from: later(since, from), to: earlier(at, to)}); s.to.After(s.from) {
				out = append(out, s)
			}
		}
		since = time.Time{}
	}
	for _, e := range p.events {
		if e.msg != "vrrp state" {
			continue
		}
		switch {
		case e.state == "master" && since.IsZero():
			since = e.at
		case e.state != "master":
			end(e.at)
		}
	}
	end(to)
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// longestDual is the longest stretch during which at least two of the
// speakers' master spans overlap.
func longestDual(spans [][]span) time.Duration {
	type edge struct {
		at time.Time
		d  int
	}
	var edges []edge
	for _, ss := range spans {
		for _, s := range ss {
			edges = append(edges, edge{s.from, +1}, edge{s.to, -1})
		}
	}
	// At the same instant an end comes before a start: spans that only
	// touch do not overlap.
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d
	})
	var longest time.Duration
	var n int
	var start time.Time
	for _, e := range edges {
		n += e.d
		switch {
		case n == 2 && e.d > 0:
			start = e.at
		case n == 1 && e.d < 0:
			longest = max(longest, e.at.Sub(start))
		}
	}
	return longest
}

// benchOnce builds a fresh lab with three speakers of im and returns the
// client's longest gap around the scenario's event and the longest time
// two masters coexisted after it, from the speakers' state logs. Off the
// link from the event on (killed, stopped, link down), h1 is not counted:
// only the masters the others can hear are. After a partition heals every
// node is back on the link, and the time before the heal is not counted.
func benchOnce(t *testing.T, im impl, scenario string) (d, dual time.Duration, err error) {
	var rerr error
	t.Run("run", func(t *testing.T) {
		l := newLab(t, 3)
		var ps []*proc
		var kills, terms []func()
		for i, h := range l.hosts {
			p, k, tm := im.start(l, h, 250-i)
			ps, kills, terms = append(ps, p), append(kills, k), append(terms, tm)
		}
		waitFor(t, "h1 master", 15*time.Second, func() bool { return ps[0].state() == "master" })
		waitFor(t, "h1 alone holds the VIP", 15*time.Second, func() bool { return slices.Equal(l.holders(), []string{"h1"}) })
		l.servedBy("h1", 5*time.Second)
		// Settle, and land the event at a random phase of the adverts.
		time.Sleep(im.interval + rand.N(im.interval))
		h1 := l.host("h1")
		settle := 3*time.Second + 5*im.interval
		var acted, to time.Time
		counted := ps[1:] // h1 leaves the link
		switch scenario {
		case "kill -9":
			d, _, acted, to = outage(t, l, settle, func() { kills[0](); h1.stopService() })
		case "link down":
			d, _, acted, to = outage(t, l, settle, func() { run(t, "ip", "-n", h1.ns, "link", "set", "eth0", "down") })
		case "SIGTERM":
			d, _, acted, to = outage(t, l, settle, func() { terms[0]() })
		case "partition heal":
			run(t, "ip", "-n", l.br, "link", "set", h1.port, "down")
			waitFor(t, "h2 master in the partition", 15*time.Second, func() bool { return ps[1].state() == "master" })
			time.Sleep(im.interval + rand.N(im.interval))
			d, _, acted, to = outage(t, l, settle, func() { run(t, "ip", "-n", l.br, "link", "set", h1.port, "up") })
			counted = ps
			if _, ok := ps[1].firstState("backup", acted); !ok {
				t.Errorf("h2 did not step down within %v of the heal", settle)
			}
		}
		var spans [][]span
		for _, p := range counted {
			spans = append(spans, p.masterSpans(acted, to))
		}
		dual = longestDual(spans)
		if t.Failed() {
			rerr = fmt.Errorf("run failed")
		}
	})
	return d, dual, rerr
}

// The benchmark's dual-master measure, on made-up state logs (no lab).
func TestLongestDual(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	logOf := func(evs ...any) *proc {
		p := &proc{}
		for i := 0; i < len(evs); i += 2 {
			p.events = append(p.events, event{at: at(evs[i].(int)), state: evs[i+1].(string), msg: "vrrp state"})
		}
		return p
	}
	from, to := at(1000), at(5000)
	tests := []struct {
		name  string
		procs []*proc
		want  time.Duration
	}{
		{"one master", []*proc{logOf(0, "backup", 1100, "master"), logOf(0, "backup")}, 0},
		{"hand-over that only touches", []*proc{logOf(0, "master", 1200, "backup"), logOf(0, "backup", 1200, "master")}, 0},
		{"brief second master", []*proc{logOf(0, "backup", 1100, "master"), logOf(0, "backup", 1101, "master", 1145, "backup")}, 44 * time.Millisecond},
		{"longest of two overlaps", []*proc{logOf(0, "backup", 1100, "master"),
			logOf(0, "backup", 1200, "master", 1210, "backup", 2000, "master", 2300, "backup")}, 300 * time.Millisecond},
		{"master before the window, still at its end", []*proc{logOf(0, "master"), logOf(4900, "master")}, 100 * time.Millisecond},
		{"three masters count as one stretch", []*proc{logOf(0, "backup", 1100, "master"), logOf(1150, "master", 1300, "backup"),
			logOf(1200, "master", 1400, "backup")}, 250 * time.Millisecond},
		{"before the window", []*proc{logOf(0, "master", 900, "backup"), logOf(500, "master")}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var spans [][]span
			for _, p := range tc.procs {
				spans = append(spans, p.masterSpans(from, to))
			}
			if got := longestDual(spans); got != tc.want {
				t.Errorf("longestDual = %v, want %v (spans %v)", got, tc.want, spans)
			}
		})
	}
}
