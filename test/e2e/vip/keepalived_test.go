package vip

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/haplane/haplane/internal/vrrp"
)

var update = flag.Bool("update", false, "record keepalived's adverts into internal/vrrp/testdata/keepalived")

func requireKeepalived(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("keepalived")
	if err != nil {
		t.Skip("keepalived is not installed (apt-get install -y keepalived; .ci/run installs it)")
	}
	return p
}

type kaOpts struct {
	version  int
	interval string // keepalived syntax: "1", "0.1"
	prio     int
	auth     string
	vip      string // default vipAddr
}

// keepalived is a running keepalived (VRRP only) in a host namespace.
type keepalived struct {
	*proc
	h       *host
	conf    string // its configuration file
	vrrpPID string // file holding the VRRP child's PID
}

// kaConf is keepalived's configuration for h, as the kubeadm HA guide
// writes it.
func kaConf(h *host, o kaOpts) string {
	auth := ""
	if o.auth != "" {
		auth = fmt.Sprintf("    authentication {\n        auth_type PASS\n        auth_pass %s\n    }\n", o.auth)
	}
	conf := fmt.Sprintf(`global_defs {
    router_id %s
    vrrp_version %d
    script_user root
    enable_script_security
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority %d
    advert_int %s
%s    virtual_ipaddress {
        %s/32 dev eth0
    }
}
`, h.name, o.version, o.prio, o.interval, auth, vipAddr)
	if o.vip != "" {
		conf = strings.Replace(conf, vipAddr+"/32", o.vip+"/128", 1)
	}
	return conf
}

// startKeepalived runs keepalived in h's namespace in the foreground with
// unique config and PID files, as the kubeadm HA guide configures it.
func (l *lab) startKeepalived(h *host, o kaOpts) *keepalived {
	bin := requireKeepalived(l.t)
	dir := l.t.TempDir()
	cf := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(cf, []byte(kaConf(h, o)), 0o644); err != nil {
		l.t.Fatal(err)
	}
	k := &keepalived{h: h, conf: cf, vrrpPID: filepath.Join(dir, "vrrp.pid")}
	// `ip netns exec` execs keepalived: the process started is
	// keepalived's parent (-n: it stays in the foreground).
	cmd := exec.Command("ip", "netns", "exec", h.ns, bin, "-n", "-l", "-D", "-P", "-f", cf,
		"-p", filepath.Join(dir, "keepalived.pid"), "-r", k.vrrpPID)
	k.proc = l.start("keepalived-"+h.name, cmd, parseKeepalived)
	// Stop the VRRP child too (by its PID), whatever happened to the
	// parent; registered after start, so it runs before the parent's kill.
	l.t.Cleanup(func() { k.killChild(syscall.SIGKILL) })
	return k
}

// reload rewrites keepalived's configuration and sends SIGHUP to the
// parent, as `systemctl reload keepalived` does.
func (k *keepalived) reload(t *testing.T, o kaOpts) {
	t.Helper()
	if err := os.WriteFile(k.conf, []byte(kaConf(k.h, o)), 0o644); err != nil {
		t.Fatal(err)
	}
	k.signal(syscall.SIGHUP)
}

func parseKeepalived(line string) (event, bool) {
	switch {
	case strings.Contains(line, "Entering MASTER STATE"):
		return event{at: time.Now(), state: "master", msg: "vrrp state"}, true
	case strings.Contains(line, "Entering BACKUP STATE"):
		return event{at: time.Now(), state: "backup", msg: "vrrp state"}, true
	}
	return event{}, false
}

func (k *keepalived) killChild(s syscall.Signal) {
	b, err := os.ReadFile(k.vrrpPID)
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		syscall.Kill(pid, s)
	}
}

// die kills keepalived with no goodbye: the VRRP child first, then the
// parent, both with SIGKILL.
func (k *keepalived) die() {
	k.killChild(syscall.SIGKILL)
	k.signal(syscall.SIGKILL)
}

// capture records one advert sent from src, as seen in the client
// namespace.
func (l *lab) capture(t *testing.T, src string) []byte {
	t.Helper()
	var got []byte
	err := inNS(l.client, func() error {
		c, err := net.ListenPacket(fmt.Sprintf("ip4:%d", vrrp.IPProto), "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		pc := ipv4.NewPacketConn(c)
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if err := pc.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("224.0.0.18")}); err != nil {
			return err
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		for {
			n, _, from, err := pc.ReadFrom(buf)
			if err != nil {
				return err
			}
			if from.(*net.IPAddr).IP.String() == src {
				got = append([]byte(nil), buf[:n]...)
				return nil
			}
		}
	})
	if err != nil {
		t.Fatalf("capture an advert from %s: %v", src, err)
	}
	return got
}

// checkWire decodes keepalived's advert with haplane's codec and requires
// the re-encoding to be byte-identical; with -update it records it for
// the codec's tests.
func checkWire(t *testing.T, l *lab, h *host, name string) {
	b := l.capture(t, h.addr)
	src := netip.MustParseAddr(h.addr)
	p, err := vrrp.Decode(b, src, vrrp.GroupV4)
	if err != nil {
		t.Fatalf("keepalived advert %x does not decode: %v", b, err)
	}
	again, err := p.Marshal(src, vrrp.GroupV4)
	if err != nil || string(again) != string(b) {
		t.Fatalf("keepalived advert %x re-encodes as %x (%v)", b, again, err)
	}
	if *update && name != "" {
		dir := filepath.Join("..", "..", "..", "internal", "vrrp", "testdata", "keepalived")
		os.MkdirAll(dir, 0o755)
		f := filepath.Join(dir, fmt.Sprintf("%s_%s_%s.bin", name, h.addr, vrrp.GroupV4))
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type interopCase struct {
	name     string
	version  int
	haplane  string // haplane advertInterval
	ka       string // keepalived advert_int
	auth     string
	takeover time.Duration // bound for a backup to take over a dead master
	interval time.Duration // the advert interval of both
}

var interopCases = []interopCase{
	{"v2-pass-1s", 2, "1s", "1", "secret12", 5 * time.Second, time.Second},
	{"v3-100ms", 3, "100ms", "0.1", "", 2 * time.Second, 100 * time.Millisecond},
}

// eachInterop runs f for each interop case in a subtest of its own. After
// the timing-sensitive sequential tests, the interop tests run side by
// side: they assert who is master, with generous bounds.
func eachInterop(t *testing.T, f func(t *testing.T, tc interopCase)) {
	requireRoot(t)
	requireKeepalived(t)
	t.Parallel()
	for _, tc := range interopCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f(t, tc)
		})
	}
}

// haplane on h1 (150) is master; keepalived on h2 (149) follows it, takes
// over when haplane dies, and yields again when haplane returns.
func TestKeepalivedBackupOfHaplane(t *testing.T) { crashAndReturn(t, true) }

// keepalived on h1 (150) is master; haplane on h2 (149) follows it, takes
// over when keepalived dies, and yields again when keepalived returns.
func TestHaplaneBackupOfKeepalived(t *testing.T) { crashAndReturn(t, false) }

// crashAndReturn runs a pair (startPair) for each interop case: the backup
// on h2 stays backup behind the master on h1, takes over when the master
// dies (kill -9 of haplane, keepalived's death), and yields again when the
// master returns at its higher priority.
func crashAndReturn(t *testing.T, haplaneMaster bool) {
	eachInterop(t, func(t *testing.T, tc interopCase) {
		p := startPair(t, tc, haplaneMaster)
		l, h1 := p.l, p.l.host("h1")
		master, backup, backupState, wire := "haplane", "keepalived", p.ka.state, ""
		if !haplaneMaster {
			master, backup, backupState, wire = "keepalived", "haplane", p.hp.state, "keepalived-"+tc.name
		}
		checkWire(t, l, h1, wire)
		// The backup must stay backup, following the master's adverts.
		time.Sleep(tc.takeover)
		if backupState() != "backup" || !slices.Equal(l.holders(), []string{"h1"}) {
			t.Fatalf("%s %s, holders %v: want %s backup behind %s", backup, backupState(), l.holders(), backup, master)
		}
		l.servedBy("h1", 2*time.Second)

		killed := time.Now()
		if haplaneMaster {
			p.hp.signal(syscall.SIGKILL)
		} else {
			p.ka.die()
		}
		h1.stopService()
		waitFor(t, backup+" to take over", tc.takeover, func() bool { return backupState() == "master" })
		t.Logf("%s master %v after %s died", backup, time.Since(killed), master)
		l.servedBy("h2", 2*time.Second)

		// The master returns at a higher priority and preempts the
		// backup. keepalived does not remove the VIP its death left on
		// h1; haplane does at start.
		if !haplaneMaster {
			run(t, "ip", "-n", h1.ns, "addr", "flush", "dev", "eth0", "to", vipAddr+"/32")
		}
		l.serve(h1)
		var masterState func() string
		if haplaneMaster {
			masterState = l.startHaplane(h1, p.cfg).state
		} else {
			masterState = l.startKeepalived(h1, p.kaOpts).state
		}
		waitFor(t, master+" to preempt "+backup, 2*tc.takeover, func() bool {
			return masterState() == "master" && backupState() == "backup"
		})
		waitFor(t, "h1 alone holds the VIP", tc.takeover, func() bool { return slices.Equal(l.holders(), []string{"h1"}) })
		l.servedBy("h1", 2*time.Second)
	})
}

// VRRPv3 over IPv6 with keepalived: both sides accept each other's adverts
// (checksum over the IPv6 pseudo-header, link-local sources) and the VIP
// moves both ways.
func TestKeepalivedIPv6(t *testing.T) {
	requireRoot(t)
	requireKeepalived(t)
	t.Parallel()
	l := newLab(t, 2)
	l.addIPv6()
	h1, h2 := l.host("h1"), l.host("h2")
	svc := net.JoinHostPort(vip6, fmt.Sprint(svcPort))
	cfg := l.writeConfig(clusterOpts{ipv6: true})
	hp := l.startHaplane(h1, cfg) // priority 150
	waitFor(t, "haplane master", 3*time.Second, func() bool { return hp.state() == "master" })
	ka := l.startKeepalived(h2, kaOpts{version: 3, interval: "0.1", prio: 149, vip: vip6})
	waitFor(t, "keepalived backup", 3*time.Second, func() bool { return ka.state() == "backup" })
	time.Sleep(time.Second)
	if ka.state() != "backup" || !slices.Equal(l.holders6(), []string{"h1"}) {
		t.Fatalf("keepalived %s, holders %v: want keepalived backup behind haplane", ka.state(), l.holders6())
	}
	l.servedAt(svc, "h1", 2*time.Second)

	hp.signal(syscall.SIGKILL)
	h1.stopService()
	waitFor(t, "keepalived to take over", 2*time.Second, func() bool { return ka.state() == "master" })
	l.servedAt(svc, "h2", 2*time.Second)

	// haplane returns at the higher priority and preempts keepalived (the
	// stale VIP that kill -9 left on h1 is removed at start).
	l.serve(h1)
	hp2 := l.startHaplane(h1, cfg)
	waitFor(t, "haplane to preempt keepalived", 3*time.Second, func() bool {
		return hp2.state() == "master" && ka.state() == "backup"
	})
	waitFor(t, "h1 alone holds the VIP", 2*time.Second, func() bool { return slices.Equal(l.holders6(), []string{"h1"}) })
	l.servedAt(svc, "h1", 2*time.Second)
}

// interopPair is haplane and keepalived on h1 and h2 at priorities 150 and
// 149, the master on h1.
type interopPair struct {
	l      *lab
	tc     interopCase
	hp     *proc
	ka     *keepalived
	cfg    string // haplane's cluster file
	kaOpts kaOpts
}

// startPair starts the pair, haplane on h1 (master) and keepalived on h2
// or the reverse, and waits until the master alone holds the VIP and
// serves the client.
func startPair(t *testing.T, tc interopCase, haplaneMaster bool) *interopPair {
	l := newLab(t, 2)
	h1, h2 := l.host("h1"), l.host("h2")
	p := &interopPair{l: l, tc: tc,
		cfg:    l.writeConfig(clusterOpts{version: tc.version, interval: tc.haplane, auth: tc.auth, prios: map[string]int{"h1": 150, "h2": 149}}),
		kaOpts: kaOpts{version: tc.version, interval: tc.ka, prio: 149, auth: tc.auth}}
	if haplaneMaster {
		p.hp = l.startHaplane(h1, p.cfg)
		waitFor(t, "haplane master", 3*tc.takeover, func() bool { return p.hp.state() == "master" })
		p.ka = l.startKeepalived(h2, p.kaOpts)
		waitFor(t, "keepalived backup", tc.takeover, func() bool { return p.ka.state() == "backup" })
	} else {
		p.kaOpts.prio = 150
		p.ka = l.startKeepalived(h1, p.kaOpts)
		waitFor(t, "keepalived master", 3*tc.takeover, func() bool { return p.ka.state() == "master" })
		p.hp = l.startHaplane(h2, p.cfg)
		waitFor(t, "haplane backup", tc.takeover, func() bool { return p.hp.state() == "backup" })
	}
	waitFor(t, "h1 alone holds the VIP", tc.takeover, func() bool { return slices.Equal(l.holders(), []string{"h1"}) })
	l.servedBy("h1", 2*time.Second)
	return p
}

// reloadStep is a priority change of one side of an interop pair: who
// reloads at which priority, and who must then be master alone on which
// host.
type reloadStep struct {
	side          string // "haplane" or "keepalived", reloaded
	prio          int
	master        string
	holder        string
	winner, loser *proc
}

// checkReload runs reload while the client runs and checks that the
// step's winner alone is master, on its holder, within preemptBound of the
// reload (Master_Down_Interval), with a client outage of at most
// maxOutage; settled bounds the wait.
func (p *interopPair) checkReload(t *testing.T, s reloadStep, settled, preemptBound, maxOutage time.Duration, reload func()) {
	t.Helper()
	gap, acted := p.l.move(t, s.master+" master alone", settled, reload, func() bool {
		return s.winner.state() == "master" && s.loser.state() == "backup" && slices.Equal(p.l.holders(), []string{s.holder})
	})
	took, _ := s.winner.firstState("master", acted)
	t.Logf("%s at priority %d: %s master %v after the reload (bound %v); longest client gap %v",
		s.side, s.prio, s.master, took.Sub(acted), preemptBound, gap)
	if d := took.Sub(acted); d > preemptBound {
		t.Errorf("%s master %v after the reload, want ≤ %v (Master_Down_Interval)", s.master, d, preemptBound)
	}
	if gap > maxOutage {
		t.Errorf("client outage %v, want ≤ %v", gap, maxOutage)
	}
	p.l.servedBy(s.holder, 2*time.Second)
}

// move runs the client around act until done holds (within bound), then
// half a second more, and returns the longest client gap and when act
// happened.
func (l *lab) move(t *testing.T, what string, bound time.Duration, act func(), done func() bool) (time.Duration, time.Time) {
	t.Helper()
	p := l.startProbe(bound + 5*time.Second)
	time.Sleep(300*time.Millisecond + rand.N(interval))
	from := time.Now()
	act()
	waitFor(t, what, bound, done)
	time.Sleep(500 * time.Millisecond)
	to := time.Now()
	p.halt()
	t.Logf("%s: %s", what, p.gapAround(from, to))
	return p.maxGap(from, to), from
}

// skew is Skew_Time of priority prio at interval iv (RFC 5798 §6.1; the
// same in RFC 3768 with whole seconds).
func skew(prio int, iv time.Duration) time.Duration { return time.Duration(256-prio) * iv / 256 }

// Hand-overs between haplane and keepalived that are not a crash: SIGTERM
// of the master (its priority-0 advert makes the backup take over after
// its Skew_Time, not Master_Down_Interval), and a priority change at run
// time (haplane's cluster file, or keepalived's configuration, reloaded
// with SIGHUP), which the other side follows both ways.
func TestKeepalivedHandover(t *testing.T) {
	eachInterop(t, func(t *testing.T, tc interopCase) {
		// A backup told by priority 0 takes over after its skew time
		// (plus log and scheduling latency); a silent master would cost
		// it 3 intervals more.
		sigtermBound := skew(149, tc.interval) + tc.interval/2 + 50*time.Millisecond
		// A backup preempting a master whose priority dropped below its
		// own waits Master_Down_Interval from the last advert it
		// accepted.
		preemptBound := 3*tc.interval + skew(150, tc.interval) + tc.interval + 300*time.Millisecond
		// A yielding haplane keeps the VIP for its release delay (3
		// intervals, at most 1s) while the new master announces itself.
		settled := preemptBound + min(3*tc.interval, time.Second) + 500*time.Millisecond

		t.Run("sigterm-haplane-master", func(t *testing.T) {
			p := startPair(t, tc, true)
			gap, acted := p.l.move(t, "keepalived master alone", 3*time.Second, func() { p.hp.signal(syscall.SIGTERM) }, func() bool {
				return p.ka.state() == "master" && !p.hp.alive() && slices.Equal(p.l.holders(), []string{"h2"})
			})
			took, _ := p.ka.firstState("master", acted)
			t.Logf("keepalived master %v after haplane's SIGTERM (skew %v, bound %v); longest client gap %v",
				took.Sub(acted), skew(149, tc.interval), sigtermBound, gap)
			if d := took.Sub(acted); d > sigtermBound {
				t.Errorf("keepalived took over %v after the SIGTERM, want ≤ %v (priority 0 → Skew_Time)", d, sigtermBound)
			}
			if c := p.hp.cmd.ProcessState.ExitCode(); c != 0 {
				t.Errorf("haplane exited %d on SIGTERM, want 0", c)
			}
			if gap > maxOutage {
				t.Errorf("client outage %v, want ≤ %v", gap, maxOutage)
			}
			p.l.servedBy("h2", 2*time.Second)
		})

		t.Run("sigterm-keepalived-master", func(t *testing.T) {
			p := startPair(t, tc, false)
			gap, acted := p.l.move(t, "haplane master alone", 3*time.Second, func() { p.ka.signal(syscall.SIGTERM) }, func() bool {
				return p.hp.state() == "master" && slices.Equal(p.l.holders(), []string{"h2"})
			})
			took, _ := p.hp.firstState("master", acted)
			t.Logf("haplane master %v after keepalived's SIGTERM (skew %v, bound %v); longest client gap %v",
				took.Sub(acted), skew(149, tc.interval), sigtermBound, gap)
			if d := took.Sub(acted); d > sigtermBound {
				t.Errorf("haplane took over %v after the SIGTERM, want ≤ %v (priority 0 → Skew_Time)", d, sigtermBound)
			}
			if !p.ka.exited(3 * time.Second) {
				t.Error("keepalived did not exit on SIGTERM")
			}
			if gap > maxOutage {
				t.Errorf("client outage %v, want ≤ %v", gap, maxOutage)
			}
			p.l.servedBy("h2", 2*time.Second)
		})

		// haplane's priority moves below keepalived's and back, by a
		// SIGHUP reload of its cluster file: keepalived preempts, then
		// yields again.
		t.Run("priority-haplane-reload", func(t *testing.T) {
			p := startPair(t, tc, true)
			for _, step := range []struct {
				prio   int
				master string // who must end up master: "haplane" or "keepalived"
			}{{100, "keepalived"}, {150, "haplane"}} {
				winner, loser, holder := p.ka.proc, p.hp, "h2"
				if step.master == "haplane" {
					winner, loser, holder = p.hp, p.ka.proc, "h1"
				}
				p.checkReload(t, reloadStep{"haplane", step.prio, step.master, holder, winner, loser}, settled, preemptBound, maxOutage, func() {
					p.l.rewriteConfig(p.cfg, clusterOpts{version: tc.version, interval: tc.haplane, auth: tc.auth, prios: map[string]int{"h1": step.prio, "h2": 149}})
					p.hp.signal(syscall.SIGHUP)
				})
				if !p.hp.alive() {
					t.Fatal("haplane exited on SIGHUP")
				}
			}
		})

		// keepalived's priority moves below haplane's and back, by a
		// SIGHUP reload of its configuration: haplane preempts, then
		// yields again.
		t.Run("priority-keepalived-reload", func(t *testing.T) {
			p := startPair(t, tc, false)
			for _, step := range []struct {
				prio   int
				master string
			}{{100, "haplane"}, {200, "keepalived"}} {
				winner, loser, holder := p.ka.proc, p.hp, "h1"
				if step.master == "haplane" {
					winner, loser, holder = p.hp, p.ka.proc, "h2"
				}
				o := p.kaOpts
				o.prio = step.prio
				p.checkReload(t, reloadStep{"keepalived", step.prio, step.master, holder, winner, loser}, settled, preemptBound, maxOutage,
					func() { p.ka.reload(t, o) })
			}
		})
	})
}
