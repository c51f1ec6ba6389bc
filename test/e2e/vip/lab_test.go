package vip

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/haplane/haplane/internal/config"
)

// The lab's addresses: 10.77.3.0/24 is this package's.
const (
	vipAddr    = "10.77.3.100"
	clientAddr = "10.77.3.50"
	svcPort    = 18443
)

var haplaneBin string

func TestMain(m *testing.M) {
	if spec := os.Getenv(hogEnv); spec != "" {
		runHog(spec) // a CPU hog started by TestLoadedMasterKeepsAdverts
	}
	code := func() int {
		if os.Geteuid() == 0 {
			if b := os.Getenv("HAPLANE_BIN"); b != "" {
				haplaneBin = b
			} else {
				dir, err := os.MkdirTemp("", "haplane-e2e-vip-")
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				defer os.RemoveAll(dir)
				haplaneBin = filepath.Join(dir, "haplane")
				cmd := exec.Command("go", "build", "-o", haplaneBin, "github.com/haplane/haplane/cmd/haplane")
				cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
				if err := cmd.Run(); err != nil {
					fmt.Fprintln(os.Stderr, "build haplane:", err)
					return 1
				}
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and a bridge (run as root, as CI does)")
	}
}

// lab is three (or more) hosts and a client, each in its own network
// namespace, on a bridge in a namespace of its own.
type lab struct {
	t      *testing.T
	prefix string
	br     string
	client string
	hosts  []*host
}

type host struct {
	name string // node name in the cluster file: h1, h2, ...
	ns   string
	addr string
	port string // its port on the bridge, in the bridge namespace
	ln   net.Listener
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newLab(t *testing.T, n int) *lab {
	t.Helper()
	requireRoot(t)
	var rb [3]byte
	rand.Read(rb[:])
	// The PID and random bytes keep names unique across test processes
	// and labs.
	l := &lab{t: t, prefix: fmt.Sprintf("hv%d%s", os.Getpid(), hex.EncodeToString(rb[:]))}
	l.br = l.prefix + "br"
	mkns := func(ns string) {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	mkns(l.br)
	run(t, "ip", "-n", l.br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	run(t, "ip", "-n", l.br, "link", "set", "br0", "up")
	attach := func(ns, port, addr string) {
		mkns(ns)
		run(t, "ip", "-n", l.br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run(t, "ip", "-n", l.br, "link", "set", port, "master", "br0", "up")
		run(t, "ip", "-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		// Learn from gratuitous ARP even without an entry (RFC 5227 style
		// announcements are how a new master redirects the clients).
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1", "net.ipv4.conf.eth0.arp_accept=1")
	}
	for i := 1; i <= n; i++ {
		h := &host{name: fmt.Sprintf("h%d", i), ns: fmt.Sprintf("%sh%d", l.prefix, i), addr: fmt.Sprintf("10.77.3.%d", 10+i), port: fmt.Sprintf("p%d", i)}
		attach(h.ns, h.port, h.addr)
		l.hosts = append(l.hosts, h)
	}
	l.client = l.prefix + "c"
	attach(l.client, "pc", clientAddr)
	for _, h := range l.hosts {
		l.serve(h)
	}
	return l
}

// inNS runs f on an OS thread switched into namespace ns. The thread is
// not returned to the pool (it stays locked and exits with the goroutine).
func inNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// serve runs a TCP service in h's namespace on every address (so on the
// VIP when h holds it) that answers each connection with h's name: the
// client learns who served it.
func (l *lab) serve(h *host) {
	err := inNS(h.ns, func() error {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", svcPort)) // IPv4 and IPv6
		h.ln = ln
		return err
	})
	if err != nil {
		l.t.Fatalf("listen in %s: %v", h.ns, err)
	}
	ln := h.ln
	l.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(h.name + "\n"))
			c.Close()
		}
	}()
}

// stopService closes h's TCP service, as when the host itself dies.
func (h *host) stopService() { h.ln.Close() }

func (l *lab) host(name string) *host {
	for _, h := range l.hosts {
		if h.name == name {
			return h
		}
	}
	l.t.Fatalf("no host %s", name)
	return nil
}

type clusterOpts struct {
	version  int
	interval string
	auth     string
	unicast  bool
	ipv6     bool
	// preemptDelay, when set, is vip.preemptDelay.
	preemptDelay string
	prios        map[string]int
}

// addIPv6 gives every host and the client an address in fd77:3::/64 and
// waits for the link-local addresses to leave duplicate address detection.
func (l *lab) addIPv6() {
	nss := []string{l.client}
	for _, h := range l.hosts {
		nss = append(nss, h.ns)
	}
	for i, ns := range nss {
		host := "50"
		if i > 0 {
			host = fmt.Sprint(10 + i)
		}
		run(l.t, "ip", "-n", ns, "-6", "addr", "add", "fd77:3::"+host+"/64", "dev", "eth0", "nodad")
	}
	waitFor(l.t, "IPv6 link-local addresses usable", 5*time.Second, func() bool {
		for _, ns := range nss {
			b, _ := exec.Command("ip", "-n", ns, "-6", "addr", "show", "dev", "eth0").Output()
			if strings.Contains(string(b), "tentative") || !strings.Contains(string(b), "scope link") {
				return false
			}
		}
		return true
	})
}

// writeConfig writes a cluster file for the lab's hosts.
func (l *lab) writeConfig(o clusterOpts) string {
	p := filepath.Join(l.t.TempDir(), "haplane.yaml")
	l.rewriteConfig(p, o)
	return p
}

// rewriteConfig replaces the cluster file at p (for a reload).
func (l *lab) rewriteConfig(p string, o clusterOpts) {
	var nodes []config.Node
	vip := vipAddr
	for i, h := range l.hosts {
		addr := h.addr
		if o.ipv6 {
			addr, vip = fmt.Sprintf("fd77:3::%d", 11+i), vip6
		}
		nodes = append(nodes, config.Node{Name: h.name, Address: addr})
	}
	y := string(config.Example(config.ExampleOptions{Name: "e2e", VIP: vip, Interface: "eth0", Nodes: nodes}))
	if o.version != 0 {
		y = strings.Replace(y, "  version: 3 ", fmt.Sprintf("  version: %d ", o.version), 1)
	}
	if o.interval != "" {
		y = strings.Replace(y, "advertInterval: 100ms", "advertInterval: "+o.interval, 1)
	}
	if o.unicast {
		y = strings.Replace(y, "  # unicast: false", "  unicast: true", 1)
		if !strings.Contains(y, "  unicast: true") {
			l.t.Fatal("example cluster file changed: cannot enable unicast")
		}
	}
	if o.preemptDelay != "" {
		y = strings.Replace(y, "  # preemptDelay: 0s", "  preemptDelay: "+o.preemptDelay, 1)
		if !strings.Contains(y, "  preemptDelay: "+o.preemptDelay) {
			l.t.Fatal("example cluster file changed: cannot set preemptDelay")
		}
	}
	if o.auth != "" {
		y = strings.Replace(y, `  # auth: {type: pass, password: "secret12"}`, fmt.Sprintf(`  auth: {type: pass, password: %q}`, o.auth), 1)
	}
	if o.prios != nil {
		for _, h := range l.hosts {
			y = strings.Replace(y, "address: "+h.addr+"\n", fmt.Sprintf("address: %s\n    priority: %d\n", h.addr, o.prios[h.name]), 1)
		}
	}
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// event is a state change a speaker logged.
type event struct {
	at    time.Time
	state string
	msg   string
}

// proc is a speaker (haplane or keepalived) running in a host namespace.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu     sync.Mutex // protects events and lines
	events []event
	lines  []string
}

// startHaplane runs `haplane vip run` for h as a separate process.
func (l *lab) startHaplane(h *host, cfg string) *proc {
	cmd := exec.Command("ip", "netns", "exec", h.ns, haplaneBin, "vip", "run", "--config", cfg, "--node", h.name, "--log-format", "json")
	return l.start("haplane-"+h.name, cmd, parseSlog)
}

func parseSlog(line string) (event, bool) {
	var m struct {
		Time  time.Time `json:"time"`
		Msg   string    `json:"msg"`
		State string    `json:"state"`
		Event string    `json:"event"`
	}
	if json.Unmarshal([]byte(line), &m) != nil {
		return event{}, false
	}
	switch m.Msg {
	case "vrrp state":
		return event{at: m.Time, state: m.State, msg: m.Msg}, true
	case "vrrp":
		return event{at: m.Time, state: m.State, msg: m.Event}, true
	case "vip announced":
		return event{at: m.Time, msg: m.Msg}, true
	}
	return event{}, false
}

func (l *lab) start(name string, cmd *exec.Cmd, parse func(string) (event, bool)) *proc {
	l.t.Helper()
	p := &proc{t: l.t, name: name, cmd: cmd, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			ev, ok := parse(line)
			p.mu.Lock()
			p.lines = append(p.lines, line)
			if ok {
				p.events = append(p.events, ev)
			}
			p.mu.Unlock()
		}
	}()
	l.t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if l.t.Failed() {
			p.mu.Lock()
			l.t.Logf("--- %s output:\n%s", name, strings.Join(p.lines, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

func (p *proc) signal(s syscall.Signal) {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(s)
	}
}

// exited waits for the process to exit.
func (p *proc) exited(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// state returns the last logged state.
func (p *proc) state() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.events) - 1; i >= 0; i-- {
		if p.events[i].state != "" && p.events[i].msg == "vrrp state" {
			return p.events[i].state
		}
	}
	return ""
}

func (p *proc) eventsSince(t time.Time) []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []event
	for _, e := range p.events {
		if !e.at.Before(t) {
			out = append(out, e)
		}
	}
	return out
}

// firstState returns when p first logged state s at or after since.
func (p *proc) firstState(s string, since time.Time) (time.Time, bool) {
	for _, e := range p.eventsSince(since) {
		if e.msg == "vrrp state" && e.state == s {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// firstEvent returns the first event at or after since whose message
// contains msg.
func (p *proc) firstEvent(msg string, since time.Time) (time.Time, bool) {
	for _, e := range p.eventsSince(since) {
		if strings.Contains(e.msg, msg) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// startAll starts haplane with cfg on every host, in order, and waits
// (up to within for each) until h1 is master and the only host holding the
// VIP as holders (l.holders or l.holders6) reads it.
func (l *lab) startAll(cfg string, within time.Duration, holders func() []string) []*proc {
	l.t.Helper()
	var ps []*proc
	for _, h := range l.hosts {
		ps = append(ps, l.startHaplane(h, cfg))
	}
	waitFor(l.t, "h1 master", within, func() bool { return ps[0].state() == "master" })
	waitFor(l.t, "h1 alone holds the VIP", within, func() bool { return slices.Equal(holders(), []string{"h1"}) })
	return ps
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if f() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

// holders lists the hosts that have the VIP on eth0.
func (l *lab) holders() []string { return l.holding("-4", " "+vipAddr+"/") }

// holding lists the hosts whose eth0 shows, among its addresses of family
// ("-4" or "-6"), the one that addr (with its prefix separator) stands
// for.
func (l *lab) holding(family, addr string) []string {
	var out []string
	for _, h := range l.hosts {
		b, _ := exec.Command("ip", "-n", h.ns, family, "-o", "addr", "show", "dev", "eth0").Output()
		if strings.Contains(string(b), addr) {
			out = append(out, h.name)
		}
	}
	return out
}

// sample is one client connection attempt.
type sample struct {
	at     time.Time
	ok     bool
	server string
}

// probe is the client: it opens a new TCP connection to the VIP every
// 10 ms, each on its own (a slow attempt does not delay the next), and
// records whether it connected and got an answer within 100 ms (far below
// TCP's 1 s initial retransmission, so a success means the VIP was
// reachable when the attempt started).
type probe struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex // protects samples
	samples []sample
}

// startProbe starts the client in its namespace; it stops after limit at
// the latest (the loop is bounded).
func (l *lab) startProbe(limit time.Duration) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	const workers = 16 // ≥ 200 ms of attempts in flight at 10 ms
	jobs := make(chan time.Time, workers)
	var wg sync.WaitGroup
	started := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inNS(l.client, func() error {
				started <- nil
				d := net.Dialer{Timeout: 100 * time.Millisecond}
				for at := range jobs {
					s := sample{at: at}
					c, err := d.Dial("tcp4", vipService)
					if err == nil {
						c.SetReadDeadline(at.Add(200 * time.Millisecond))
						line, rerr := bufio.NewReader(c).ReadString('\n')
						c.Close()
						if rerr == nil {
							s.ok, s.server = true, strings.TrimSpace(line)
						}
					}
					p.mu.Lock()
					p.samples = append(p.samples, s)
					p.mu.Unlock()
				}
				return nil
			})
		}()
	}
	for range workers {
		<-started
	}
	go func() {
		defer close(p.done)
		defer wg.Wait()
		defer close(jobs)
		end := time.Now().Add(limit)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for time.Now().Before(end) {
			select {
			case jobs <- time.Now():
			default: // every worker busy: counted as a failed attempt
				p.mu.Lock()
				p.samples = append(p.samples, sample{at: time.Now()})
				p.mu.Unlock()
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	l.t.Cleanup(p.halt)
	return p
}

func (p *probe) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *probe) sorted() []sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Clone(p.samples)
	slices.SortFunc(out, func(a, b sample) int { return a.at.Compare(b.at) })
	return out
}

// maxGap is the longest time between two successful connections in
// [from, to], counting the edges of the window.
func (p *probe) maxGap(from, to time.Time) time.Duration {
	last := from
	var gap time.Duration
	for _, s := range p.sorted() {
		if s.at.Before(from) || s.at.After(to) || !s.ok {
			continue
		}
		gap = max(gap, s.at.Sub(last))
		last = s.at
	}
	return max(gap, to.Sub(last))
}

// gapAround describes the longest gap in [from, to]: who served the
// client before and after it, and when, relative to from.
func (p *probe) gapAround(from, to time.Time) string {
	last := sample{at: from}
	var before, after sample
	var gap time.Duration
	for _, s := range p.sorted() {
		if s.at.Before(from) || s.at.After(to) || !s.ok {
			continue
		}
		if d := s.at.Sub(last.at); d > gap {
			gap, before, after = d, last, s
		}
		last = s
	}
	if d := to.Sub(last.at); d > gap {
		gap, before, after = d, last, sample{at: to, server: "(end)"}
	}
	return fmt.Sprintf("%v gap from +%v (%s) to +%v (%s)", gap, before.at.Sub(from).Round(time.Millisecond), before.server,
		after.at.Sub(from).Round(time.Millisecond), after.server)
}

// servers lists who served the successful connections in [from, to], in
// order of first appearance.
func (p *probe) servers(from, to time.Time) []string {
	var out []string
	for _, s := range p.sorted() {
		if s.ok && !s.at.Before(from) && !s.at.After(to) && !slices.Contains(out, s.server) {
			out = append(out, s.server)
		}
	}
	return out
}

// lastServedBy says when the last connection in [from, to] served by a
// server other than want happened (zero if none).
func (p *probe) lastServedByOther(want string, from, to time.Time) time.Time {
	var at time.Time
	for _, s := range p.sorted() {
		if s.ok && s.server != want && !s.at.Before(from) && !s.at.After(to) {
			at = s.at
		}
	}
	return at
}

// servedBy waits until the client is served by want on the VIP.
func (l *lab) servedBy(want string, d time.Duration) {
	l.t.Helper()
	l.servedAt(vipService, want, d)
}

// servedAt waits until the client is served by want at service.
func (l *lab) servedAt(service, want string, d time.Duration) {
	l.t.Helper()
	waitFor(l.t, "client served by "+want, d, func() bool {
		var got string
		inNS(l.client, func() error {
			c, err := net.DialTimeout("tcp", service, 100*time.Millisecond)
			if err != nil {
				return nil
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			line, _ := bufio.NewReader(c).ReadString('\n')
			got = strings.TrimSpace(line)
			return nil
		})
		return got == want
	})
}

var _ = context.Background

var vipService = net.JoinHostPort(vipAddr, fmt.Sprint(svcPort))

const vip6 = "fd77:3::100"
