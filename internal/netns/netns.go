// Package netns makes hosts out of Linux network namespaces: a network is a
// bridge inside a namespace of its own with one veth per host, so no host
// interface is ever attached and nothing leaves the machine. Every name
// carries the network's prefix, so a crashed run's leftovers can be swept
// by name. The lab (`haplane lab`) runs a control plane on such hosts, and
// tests that need separate hosts (VRRP, etcd members) use it directly.
//
// It uses the ip command from iproute2 (present wherever network namespaces
// are) and needs root.
package netns

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Net is a lab network.
type Net struct {
	Prefix string // namespace names are Prefix-<host>; the bridge's is Prefix-br

	mu    sync.Mutex // protects hosts
	hosts []*Host
}

// Host is one namespace on the lab network.
type Host struct {
	Name    string
	NS      string     // namespace name
	Addr    netip.Addr // on eth0
	Iface   string     // "eth0"
	bridgeV string     // the veth end on the bridge
	net     *Net
}

// RequireRoot returns an error saying why the lab cannot run here.
func RequireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("netns: network namespaces need root (run with sudo)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("netns: the ip command (iproute2) is required")
	}
	return nil
}

// ip runs the ip command and returns its error with stderr.
func ip(args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// NewNet creates the bridge namespace. Prefix must be short (host
// namespaces and veth names derive from it) and unique to this lab.
func NewNet(prefix string) (*Net, error) {
	if err := RequireRoot(); err != nil {
		return nil, err
	}
	if prefix == "" || len(prefix) > 20 || strings.ContainsAny(prefix, "/ ") {
		return nil, fmt.Errorf("netns: bad prefix %q", prefix)
	}
	n := &Net{Prefix: prefix}
	br := n.bridgeNS()
	if err := ip("netns", "add", br); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	for _, args := range [][]string{
		{"-n", br, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", "br0", "type", "bridge"},
		{"-n", br, "link", "set", "br0", "up"},
	} {
		if err := ip(args...); err != nil {
			_ = ip("netns", "del", br)
			return nil, fmt.Errorf("netns: bridge: %w", err)
		}
	}
	return n, nil
}

func (n *Net) bridgeNS() string { return n.Prefix + "-br" }

// Attach returns the host name of an existing network (namespace ns), for
// a caller that made it earlier, e.g. in another process: its commands,
// link and partition work as on the Host AddHost returned.
func (n *Net) Attach(name, ns string) *Host {
	return &Host{Name: name, NS: ns, bridgeV: bridgeVeth(name), net: n}
}

// AddHost creates namespace Prefix-name with eth0 at addr/bits, attached to
// the bridge. arp_accept is on, so the host learns from gratuitous ARP as a
// real peer of a VIP must.
func (n *Net) AddHost(name string, addr netip.Addr, bits int) (*Host, error) {
	h := &Host{Name: name, NS: n.Prefix + "-" + name, Addr: addr, Iface: "eth0", net: n}
	h.bridgeV = bridgeVeth(name)
	if err := ip("netns", "add", h.NS); err != nil {
		return nil, fmt.Errorf("netns: host %s: %w", name, err)
	}
	steps := [][]string{
		{"-n", h.NS, "link", "set", "lo", "up"},
		{"-n", h.NS, "link", "add", "eth0", "type", "veth", "peer", "name", h.bridgeV, "netns", n.bridgeNS()},
		{"-n", n.bridgeNS(), "link", "set", h.bridgeV, "master", "br0"},
		{"-n", n.bridgeNS(), "link", "set", h.bridgeV, "up"},
		{"-n", h.NS, "addr", "add", netip.PrefixFrom(addr, bits).String(), "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
	}
	for _, args := range steps {
		if err := ip(args...); err != nil {
			_ = ip("netns", "del", h.NS)
			return nil, fmt.Errorf("netns: host %s: %w", name, err)
		}
	}
	for _, kv := range []string{"net.ipv4.conf.all.arp_accept=1", "net.ipv4.conf.eth0.arp_accept=1", "net.ipv4.ip_nonlocal_bind=1"} {
		if out, err := exec.Command("ip", "netns", "exec", h.NS, "sysctl", "-qw", kv).CombinedOutput(); err != nil {
			_ = ip("netns", "del", h.NS)
			return nil, fmt.Errorf("netns: host %s: sysctl %s: %v: %s", name, kv, err, out)
		}
	}
	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	return h, nil
}

// Hosts lists the hosts in creation order.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

// Command returns a command that runs inside the host's namespace. The
// caller starts it and owns the process (stop it by its PID).
//
// The process carries LabEnv=h.NS in its environment (its children too),
// which is how Sweep tells the lab's processes from others that happen to
// be in the namespace, such as a test whose main thread entered it.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	cmd.Env = append(os.Environ(), LabEnv+"="+h.NS)
	return cmd
}

// LabEnv marks the processes a network's hosts run (Host.Command).
const LabEnv = "HAPLANE_LAB_NS"

// labProcess reports whether pid carries the lab's mark for namespace ns.
func labProcess(pid int, ns string) bool {
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	mark := LabEnv + "=" + ns
	for _, kv := range bytes.Split(env, []byte{0}) {
		if string(kv) == mark {
			return true
		}
	}
	return false
}

// SetLink takes the host's link down or up. It acts on the bridge side of
// the veth, so the host sees its carrier go, as when a cable is pulled,
// and nothing inside the host is told.
func (h *Host) SetLink(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if err := ip("-n", h.net.bridgeNS(), "link", "set", h.bridgeV, state); err != nil {
		return fmt.Errorf("netns: link %s %s: %w", h.Name, state, err)
	}
	return nil
}

// bridgeVeth names a host's veth end on the bridge: it must fit IFNAMSIZ
// (15) and be unique per lab.
func bridgeVeth(host string) string {
	v := "v-" + host
	if len(v) > 15 {
		v = v[:15]
	}
	return v
}

// SetPartitioned cuts the host off the network, or heals it, with its
// link still up: its bridge port stops forwarding (state disabled), so
// the host keeps its carrier and believes it is fine, as on the far side
// of a broken switch.
func (h *Host) SetPartitioned(on bool) error {
	state := "3" // forwarding
	if on {
		state = "0" // disabled
	}
	var stderr bytes.Buffer
	cmd := exec.Command("bridge", "-n", h.net.bridgeNS(), "link", "set", "dev", h.bridgeV, "state", state)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("netns: partition %s (%v): bridge link set state %s: %v: %s", h.Name, on, state, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Close deletes every namespace of the lab; their veths go with them. It
// is idempotent.
func (n *Net) Close() error {
	return Sweep(n.Prefix)
}

// Sweep deletes every namespace named prefix-*: what a lab of that prefix
// made, including a crashed one's leftovers. The lab's processes still
// running in them (those with its LabEnv mark) are stopped first (SIGTERM,
// SIGKILL after grace): without its state file a lab no longer knows their
// PIDs, and a namespace that is deleted under a live process only loses
// its name, not the process. Other processes in them are left alone.
func Sweep(prefix string) error {
	return sweep(prefix, 3*time.Second)
}

func sweep(prefix string, grace time.Duration) error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("netns: ip netns list: %w", err)
	}
	var names []string
	var marked []int
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix+"-") {
			continue
		}
		names = append(names, f[0])
		pids, _ := exec.Command("ip", "netns", "pids", f[0]).Output()
		for _, p := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(p); err == nil && pid != os.Getpid() && labProcess(pid, f[0]) {
				marked = append(marked, pid)
			}
		}
	}
	StopPIDs(marked, grace)
	var errs []error
	for _, ns := range names {
		if err := ip("netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Alive reports whether pid runs (and is not a zombie we cannot reap).
func Alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	if i := strings.LastIndexByte(string(data), ')'); i > 0 && i+2 < len(data) && data[i+2] == 'Z' {
		return false
	}
	return true
}

// StopPIDs stops single processes (not groups): SIGTERM, then SIGKILL to
// what is left after grace.
func StopPIDs(pids []int, grace time.Duration) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	WaitOrKill(pids, grace, func(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) })
}

// WaitOrKill waits up to grace for pids to exit, then kills the rest and
// waits (up to another grace) until they are gone: a SIGKILL is not
// immediate for a large process (a kube-apiserver tearing down its
// memory), and namespaces are deleted next.
func WaitOrKill(pids []int, grace time.Duration, kill func(pid int)) {
	if WaitGone(pids, grace) {
		return
	}
	for _, pid := range pids {
		if Alive(pid) {
			kill(pid)
		}
	}
	WaitGone(pids, grace)
}

// WaitGone waits up to d for every process of pids to exit; it reports
// whether they did.
func WaitGone(pids []int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		running := false
		for _, pid := range pids {
			running = running || Alive(pid)
		}
		if !running {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
