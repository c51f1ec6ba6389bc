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
	vals           []time.Duration
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
		for _, sc := range []string{"kill -9", "link down", "SIGTERM", "partition heal (dual master)"} {
			r := &benchResult{impl: im.name, scenario: sc}
			results = append(results, r)
			for i := range runs {
				d, err := benchOnce(t, im, sc)
				if err != nil {
					t.Errorf("%s / %s run %d: %v", im.name, sc, i, err)
					continue
				}
				t.Logf("%s / %s run %d: %v", im.name, sc, i, d)
				r.vals = append(r.vals, d)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-34s %-30s %5s %9s %9s %9s\n", "implementation", "scenario", "runs", "min", "median", "max")
	for _, r := range results {
		if len(r.vals) == 0 {
			continue
		}
		slices.Sort(r.vals)
		ms := func(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/1e6) }
		fmt.Fprintf(&b, "%-34s %-30s %5d %9s %9s %9s\n", r.impl, r.scenario, len(r.vals),
			ms(r.vals[0]), ms(r.vals[len(r.vals)/2]), ms(r.vals[len(r.vals)-1]))
	}
	fmt.Print(b.String())
}

// benchOnce builds a fresh lab with three speakers of im and returns the
// client's longest gap around the scenario's event (for partition heal:
// how long two masters coexisted after the heal).
func benchOnce(t *testing.T, im impl, scenario string) (d time.Duration, err error) {
	var res time.Duration
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
		switch scenario {
		case "kill -9":
			res, _, _, _ = outage(t, l, settle, func() { kills[0](); h1.stopService() })
		case "link down":
			res, _, _, _ = outage(t, l, settle, func() { run(t, "ip", "-n", h1.ns, "link", "set", "eth0", "down") })
		case "SIGTERM":
			res, _, _, _ = outage(t, l, settle, func() { terms[0]() })
		case "partition heal (dual master)":
			run(t, "ip", "-n", l.br, "link", "set", h1.port, "down")
			waitFor(t, "h2 master in the partition", 15*time.Second, func() bool { return ps[1].state() == "master" })
			time.Sleep(im.interval + rand.N(im.interval))
			healed := time.Now()
			run(t, "ip", "-n", l.br, "link", "set", h1.port, "up")
			waitFor(t, "h2 to step down", 10*time.Second, func() bool {
				_, ok := ps[1].firstState("backup", healed)
				return ok
			})
			at, _ := ps[1].firstState("backup", healed)
			res = at.Sub(healed)
		}
		if t.Failed() {
			rerr = fmt.Errorf("run failed")
		}
	})
	return res, rerr
}
