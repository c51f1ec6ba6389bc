package vip

import (
	"flag"
	"fmt"
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
	vrrpPID string // file holding the VRRP child's PID
}

// startKeepalived runs keepalived in h's namespace in the foreground with
// unique config and PID files, as the kubeadm HA guide configures it.
func (l *lab) startKeepalived(h *host, o kaOpts) *keepalived {
	bin := requireKeepalived(l.t)
	dir := l.t.TempDir()
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
	cf := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		l.t.Fatal(err)
	}
	k := &keepalived{vrrpPID: filepath.Join(dir, "vrrp.pid")}
	cmd := exec.Command("ip", "netns", "exec", h.ns, bin, "-n", "-l", "-D", "-P", "-f", cf,
		"-p", filepath.Join(dir, "keepalived.pid"), "-r", k.vrrpPID)
	k.proc = l.start("keepalived-"+h.name, cmd, parseKeepalived)
	// Stop the VRRP child too (by its PID), whatever happened to the
	// parent; registered after start, so it runs before the parent's kill.
	l.t.Cleanup(func() { k.killChild(syscall.SIGKILL) })
	return k
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
}

var interopCases = []interopCase{
	{"v2-pass-1s", 2, "1s", "1", "secret12", 5 * time.Second},
	{"v3-100ms", 3, "100ms", "0.1", "", 2 * time.Second},
}

// haplane on h1 (150) is master; keepalived on h2 (149) follows it, takes
// over when haplane dies, and yields again when haplane returns.
func TestKeepalivedBackupOfHaplane(t *testing.T) {
	requireRoot(t)
	requireKeepalived(t)
	// After the timing-sensitive sequential tests, the interop tests run
	// side by side: they assert who is master, with generous bounds.
	t.Parallel()
	for _, tc := range interopCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, 2)
			h1, h2 := l.host("h1"), l.host("h2")
			cfg := l.writeConfig(clusterOpts{version: tc.version, interval: tc.haplane, auth: tc.auth, prios: map[string]int{"h1": 150, "h2": 149}})
			hp := l.startHaplane(h1, cfg)
			waitFor(t, "haplane master", 3*tc.takeover, func() bool { return hp.state() == "master" })
			ka := l.startKeepalived(h2, kaOpts{version: tc.version, interval: tc.ka, prio: 149, auth: tc.auth})
			waitFor(t, "keepalived backup", tc.takeover, func() bool { return ka.state() == "backup" })
			checkWire(t, l, h1, "")
			// keepalived must stay backup, following haplane's adverts.
			time.Sleep(tc.takeover)
			if ka.state() != "backup" || !slices.Equal(l.holders(), []string{"h1"}) {
				t.Fatalf("keepalived %s, holders %v: want keepalived backup behind haplane", ka.state(), l.holders())
			}
			l.servedBy("h1", 2*time.Second)

			killed := time.Now()
			hp.signal(syscall.SIGKILL)
			h1.stopService()
			waitFor(t, "keepalived to take over", tc.takeover, func() bool { return ka.state() == "master" })
			t.Logf("keepalived master %v after haplane died", time.Since(killed))
			l.servedBy("h2", 2*time.Second)

			// haplane returns at a higher priority and preempts keepalived.
			l.serve(h1)
			hp2 := l.startHaplane(h1, cfg)
			waitFor(t, "haplane to preempt keepalived", 2*tc.takeover, func() bool {
				return hp2.state() == "master" && ka.state() == "backup"
			})
			waitFor(t, "h1 alone holds the VIP", tc.takeover, func() bool { return slices.Equal(l.holders(), []string{"h1"}) })
			l.servedBy("h1", 2*time.Second)
		})
	}
}

// keepalived on h1 (150) is master; haplane on h2 (149) follows it, takes
// over when keepalived dies, and yields again when keepalived returns.
func TestHaplaneBackupOfKeepalived(t *testing.T) {
	requireRoot(t)
	requireKeepalived(t)
	t.Parallel()
	for _, tc := range interopCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, 2)
			h1, h2 := l.host("h1"), l.host("h2")
			cfg := l.writeConfig(clusterOpts{version: tc.version, interval: tc.haplane, auth: tc.auth, prios: map[string]int{"h1": 150, "h2": 149}})
			ka := l.startKeepalived(h1, kaOpts{version: tc.version, interval: tc.ka, prio: 150, auth: tc.auth})
			waitFor(t, "keepalived master", 3*tc.takeover, func() bool { return ka.state() == "master" })
			checkWire(t, l, h1, "keepalived-"+tc.name)
			hp := l.startHaplane(h2, cfg)
			time.Sleep(tc.takeover)
			if hp.state() != "backup" || !slices.Equal(l.holders(), []string{"h1"}) {
				t.Fatalf("haplane %s, holders %v: want haplane backup behind keepalived", hp.state(), l.holders())
			}
			l.servedBy("h1", 2*time.Second)

			killed := time.Now()
			ka.die()
			h1.stopService()
			waitFor(t, "haplane to take over", tc.takeover, func() bool { return hp.state() == "master" })
			t.Logf("haplane master %v after keepalived died", time.Since(killed))
			l.servedBy("h2", 2*time.Second)

			// keepalived comes back at a higher priority; haplane yields.
			run(t, "ip", "-n", h1.ns, "addr", "flush", "dev", "eth0", "to", vipAddr+"/32")
			l.serve(h1)
			ka2 := l.startKeepalived(h1, kaOpts{version: tc.version, interval: tc.ka, prio: 150, auth: tc.auth})
			waitFor(t, "keepalived to preempt haplane", 2*tc.takeover, func() bool {
				return ka2.state() == "master" && hp.state() == "backup"
			})
			waitFor(t, "h1 alone holds the VIP", tc.takeover, func() bool { return slices.Equal(l.holders(), []string{"h1"}) })
			l.servedBy("h1", 2*time.Second)
		})
	}
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
