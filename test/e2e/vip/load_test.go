package vip

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/haplane/haplane/internal/vrrp"
)

// speakerNice is vip run's default --nice.
const speakerNice = -10

// hogEnv makes the test binary a CPU hog instead of running tests (see
// TestMain): its value is the hog's kind and how long it runs, as
// "spin:6s" or "alloc:6s". The hog stops by itself after that time.
const hogEnv = "HAPLANE_E2E_HOG"

// runHog is the hog process: one busy goroutine ("spin"), or one that
// keeps replacing a 32 MiB working set in 128 KiB pieces ("alloc"), so the
// garbage collector and memory bandwidth are loaded as well as the CPU.
func runHog(spec string) {
	kind, d, ok := strings.Cut(spec, ":")
	limit, err := time.ParseDuration(d)
	if !ok || err != nil || limit > 30*time.Second {
		fmt.Fprintf(os.Stderr, "bad %s=%q\n", hogEnv, spec)
		os.Exit(2)
	}
	runtime.GOMAXPROCS(1)
	end := time.Now().Add(limit)
	var ring [256][]byte
	var sink uint64
	for i := 0; time.Now().Before(end); i++ {
		if kind == "alloc" {
			b := make([]byte, 128<<10)
			b[i%len(b)] = byte(i)
			ring[i%len(ring)] = b
			continue
		}
		for j := range 100000 {
			sink += uint64(j) * uint64(i)
		}
	}
	_ = sink
	os.Exit(0)
}

// hog is a set of CPU hogs running in one host's namespace.
type hog struct {
	cmds []*exec.Cmd
	done []chan struct{}
}

// startHogs runs n hog processes in h's namespace for d (each stops by
// itself; the cleanup kills any left by PID), at nice value nice. Half
// spin, half allocate.
func (l *lab) startHogs(h *host, n int, d time.Duration, nice int) *hog {
	l.t.Helper()
	self, err := os.Executable()
	if err != nil {
		l.t.Fatal(err)
	}
	g := &hog{}
	for i := range n {
		kind := "spin"
		if i%2 == 1 {
			kind = "alloc"
		}
		// nice and ip netns exec both exec, so the PID is the hog's.
		cmd := exec.Command("nice", "-n", strconv.Itoa(nice), "ip", "netns", "exec", h.ns, self)
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%s", hogEnv, kind, d))
		// If the test binary dies, the hog goes with it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			l.t.Fatalf("start hog: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		g.cmds, g.done = append(g.cmds, cmd), append(g.done, done)
		l.t.Cleanup(func() {
			select {
			case <-done:
			default:
				cmd.Process.Kill()
				<-done
			}
		})
	}
	return g
}

// wait waits for every hog to exit and returns the CPU time they used.
func (g *hog) wait() time.Duration {
	var cpu time.Duration
	for i, c := range g.cmds {
		<-g.done[i]
		cpu += c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	return cpu
}

// advertCapture records when the kernel of a host received each advert
// from one source. The times are the kernel's receive timestamps
// (SO_TIMESTAMPNS), so the reading goroutine, itself slowed by the load,
// does not distort the gaps it measures.
type advertCapture struct {
	c     *net.IPConn
	src   netip.Addr
	done  chan struct{}
	at    chan time.Time
	close func()
}

func (l *lab) captureAdverts(h *host, src string) *advertCapture {
	l.t.Helper()
	ac := &advertCapture{src: netip.MustParseAddr(src), done: make(chan struct{}), at: make(chan time.Time, 1<<16)}
	ac.close = func() { ac.c.Close() }
	err := inNS(h.ns, func() error {
		pc, err := net.ListenPacket(fmt.Sprintf("ip4:%d", vrrp.IPProto), "0.0.0.0")
		if err != nil {
			return err
		}
		ac.c = pc.(*net.IPConn)
		rc, err := ac.c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("SO_TIMESTAMPNS: %w", serr)
		}
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		return ipv4.NewPacketConn(ac.c).JoinGroup(ifi, &net.IPAddr{IP: net.IPv4(224, 0, 0, 18)})
	})
	if err != nil {
		l.t.Fatalf("advert capture in %s: %v", h.ns, err)
	}
	go func() {
		defer close(ac.done)
		defer close(ac.at)
		b, oob := make([]byte, 1500), make([]byte, 128)
		for {
			_, oobn, _, from, err := ac.c.ReadMsgIP(b, oob)
			if err != nil {
				return
			}
			if a, ok := netip.AddrFromSlice(from.IP); !ok || a.Unmap() != ac.src {
				continue
			}
			if ts, ok := kernelTimestamp(oob[:oobn]); ok {
				ac.at <- ts
			}
		}
	}()
	l.t.Cleanup(func() { ac.close(); <-ac.done })
	return ac
}

// captureSent records when each VRRP advert h sends leaves its eth0: an
// AF_PACKET socket sees the outgoing frames, stamped by the kernel as
// they are handed to the link. That is the speaker's own timeliness, with
// no part of the path to the backups (the bridge, and softirq work that
// may run in ksoftirqd at an ordinary priority).
func (l *lab) captureSent(h *host) *advertCapture {
	l.t.Helper()
	ac := &advertCapture{done: make(chan struct{}), at: make(chan time.Time, 1<<16)}
	// ETH_P_ALL (in network order): only such sockets see outgoing frames.
	proto := int(binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, unix.ETH_P_ALL)))
	var fd int
	err := inNS(h.ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			return err
		}
		// Reads wake up regularly to notice the stop.
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	})
	if err != nil {
		if fd > 0 {
			unix.Close(fd)
		}
		l.t.Fatalf("packet capture in %s: %v", h.ns, err)
	}
	stop := make(chan struct{})
	ac.close = func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}
	go func() {
		defer close(ac.done)
		defer close(ac.at)
		defer unix.Close(fd)
		b, oob := make([]byte, 1500), make([]byte, 128)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, oobn, _, from, err := unix.Recvmsg(fd, b, oob, 0)
			if err != nil {
				continue // the read timeout
			}
			sll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || sll.Pkttype != unix.PACKET_OUTGOING || n < ipv4.HeaderLen || b[0]>>4 != 4 || b[9] != vrrp.IPProto {
				continue
			}
			if ts, ok := kernelTimestamp(oob[:oobn]); ok {
				ac.at <- ts
			}
		}
	}()
	l.t.Cleanup(func() { ac.close(); <-ac.done })
	return ac
}

func kernelTimestamp(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return time.Unix(sec, nsec), true
		}
	}
	return time.Time{}, false
}

// stop ends the capture and returns the receive times, in order.
func (ac *advertCapture) stop() []time.Time {
	ac.close()
	<-ac.done
	var out []time.Time
	for t := range ac.at {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// cpuTimes returns the machine's idle time and the time the hypervisor
// stole from it so far (/proc/stat), summed over CPUs.
func cpuTimes(t *testing.T) (idle, steal time.Duration) {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal
	if len(f) < 9 {
		t.Fatalf("/proc/stat: %q", line)
	}
	ticks := func(s string) time.Duration {
		n, _ := strconv.ParseInt(s, 10, 64)
		return time.Duration(n) * time.Second / 100 // USER_HZ
	}
	return ticks(f[4]) + ticks(f[5]), ticks(f[8])
}

// majorFaults is the number of page faults of pid that needed I/O: a
// speaker whose pages were reclaimed waits on the disk, whatever its
// scheduling priority.
func majorFaults(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// majflt is field 12 of stat, the 10th after the command name.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	n, _ := strconv.Atoi(f[9])
	return n
}

// maxAdvertGap is the longest time in [from, to] without an advert,
// counting the edges of the window, and the number of adverts in it.
func maxAdvertGap(at []time.Time, from, to time.Time) (time.Duration, int) {
	last := from
	var gap time.Duration
	n := 0
	for _, t := range at {
		if t.Before(from) || t.After(to) {
			continue
		}
		gap = max(gap, t.Sub(last))
		last = t
		n++
	}
	return max(gap, to.Sub(last)), n
}

// A master whose node is saturated keeps its adverts on time (issue 3,
// deliver 6): CPU hogs, twice as many as CPUs, half of them also churning
// the memory allocator, run in h1's namespace for 6 s. The backups must
// keep hearing h1 with no gap longer than two intervals plus slack (three
// intervals and the skew would make them take over), and no node may
// change state. vip run's defences: adverts sent from their own goroutine
// through a non-blocking queue, address work off the loop, and every
// thread at nice -10.
//
// The hogs run at the speaker's own nice value (-10), so the raised
// priority buys the speaker a fair share and no more. Load at an ordinary
// priority is no test of it: the kernel's scheduler (EEVDF) already
// serves a rarely-running nice-0 speaker within a few milliseconds
// against nice-0 hogs. Measured on 2 CPUs: with vip run --nice 0 against
// these hogs, adverts left up to 420 ms apart and a backup took over in
// 3 runs of 4; at -10, 120-180 ms and no state change.
//
// It runs only with HAPLANE_E2E_LOAD=1, which .ci/run sets in a step of its
// own after the other tests: nice -10 hogs saturating every CPU for 6 s
// would starve the packages `go test ./...` runs beside it (etcd elections,
// the lab's failover bounds) and make them fail instead of this one.
func TestLoadedMasterKeepsAdverts(t *testing.T) {
	if os.Getenv("HAPLANE_E2E_LOAD") != "1" {
		t.Skip("skipping: set HAPLANE_E2E_LOAD=1 to run it (.ci/run does, alone): it saturates every CPU at nice -10 for 6s, which would starve tests running beside it")
	}
	l, ps := threeSpeakers(t)
	h1, h2 := l.host("h1"), l.host("h2")
	capture := l.captureAdverts(h2, h1.addr)
	sent := l.captureSent(h1)
	time.Sleep(time.Second) // a baseline without the load

	const hogFor = 6 * time.Second
	n := 2 * runtime.NumCPU()
	idle0, steal0 := cpuTimes(t)
	faults0 := majorFaults(t, ps[0].cmd.Process.Pid)
	hogStart := time.Now()
	g := l.startHogs(h1, n, hogFor, speakerNice)
	cpu := g.wait()
	hogEnd := time.Now()
	idle1, steal1 := cpuTimes(t)
	idle, steal := idle1-idle0, steal1-steal0
	faults := majorFaults(t, ps[0].cmd.Process.Pid) - faults0
	time.Sleep(500 * time.Millisecond) // longer than Master_Down_Interval
	at, out := capture.stop(), sent.stop()

	base, nBase := maxAdvertGap(at, hogStart.Add(-time.Second), hogStart)
	gap, nLoaded := maxAdvertGap(at, hogStart, hogEnd)
	sendGap, nSent := maxAdvertGap(out, hogStart, hogEnd)
	machine := hogEnd.Sub(hogStart) * time.Duration(runtime.NumCPU())
	t.Logf("%d hogs on %d CPUs for %v: they used %v of CPU; the machine was idle %.1f%% of the time, the hypervisor stole %v",
		n, runtime.NumCPU(), hogEnd.Sub(hogStart).Round(time.Millisecond), cpu.Round(time.Millisecond), 100*idle.Seconds()/machine.Seconds(), steal)
	t.Logf("h1's speaker took %d major page faults under load; it sent %d adverts, the longest gap between two leaving its eth0 %v",
		faults, nSent, sendGap.Round(time.Microsecond))
	t.Logf("adverts from h1 at h2: baseline %d in 1s, longest gap %v; under load %d, longest gap %v",
		nBase, base.Round(time.Microsecond), nLoaded, gap.Round(time.Microsecond))
	// The CPUs must have been saturated, or the test proves nothing: the
	// hogs themselves must have used most of every CPU for their 6 s. (Idle
	// time around them is no measure: the hogs take a while to start, more
	// so in a -race build.)
	if want := hogFor * time.Duration(runtime.NumCPU()) * 3 / 4; cpu < want {
		t.Errorf("the hogs used %v of CPU, want ≥ %v (three quarters of every CPU for %v): the load was not real", cpu, want, hogFor)
	}
	// h2 takes over after Master_Down_Interval, 3 intervals and its skew
	// (302.7 ms at 100 ms and priority 249): a gap of two intervals means
	// one advert late by up to a whole interval, and the slack covers the
	// delays no priority inside the machine can prevent (hypervisor steal,
	// other tests on a shared runner).
	if limit := 2*interval + 100*time.Millisecond; gap > limit {
		t.Errorf("longest gap between h1's adverts at h2 under load %v, want ≤ %v", gap, limit)
	}
	if want := int(hogEnd.Sub(hogStart) / interval * 9 / 10); nLoaded < want {
		t.Errorf("h2 received %d adverts from h1 in %v under load, want ≥ %d", nLoaded, hogEnd.Sub(hogStart), want)
	}
	for _, p := range ps {
		if !p.alive() {
			t.Errorf("%s died under load", p.name)
		}
		for _, e := range p.eventsSince(hogStart) {
			if e.msg == "vrrp state" {
				t.Errorf("%s changed state under load: %+v", p.name, e)
			}
		}
	}
	if ps[0].state() != "master" || ps[1].state() != "backup" || ps[2].state() != "backup" {
		t.Errorf("states h1=%s h2=%s h3=%s after the load, want master, backup, backup", ps[0].state(), ps[1].state(), ps[2].state())
	}
	if h := l.holders(); !slices.Equal(h, []string{"h1"}) {
		t.Errorf("VIP holders %v after the load, want [h1]", h)
	}
}
