package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/netns"
	"github.com/haplane/haplane/internal/pki"
)

// Lab addressing: every lab host lives on 10.77.0.0/24.
var (
	Subnet     = netip.MustParsePrefix("10.77.0.0/24")
	VIP        = netip.MustParseAddr("10.77.0.100")
	ClientAddr = netip.MustParseAddr("10.77.0.50")
)

// DefaultPrefix names the namespaces of `haplane lab`.
const DefaultPrefix = "hplab"

// Options shape a lab.
type Options struct {
	// Dir holds the lab's state: cluster file, PKI, logs, data, state.json.
	Dir string
	// Prefix of the namespaces (default DefaultPrefix).
	Prefix string
	// Nodes is the number of control-plane nodes (1..9, default 3).
	Nodes int
	// Topology is "stacked" (default) or "external" (three etcd hosts).
	Topology string
	// Binary is the haplane executable the hosts run (default this
	// one); Up copies it into Dir, so the lab survives the build that
	// started it (go run).
	Binary string
	// Out receives progress lines.
	Out io.Writer
	// SeparateEtcd runs each etcd member as its own process (as kubelet
	// runs kubeadm's etcd static pod) instead of inside the agent.
	SeparateEtcd bool
	// Backend is the API server on every control-plane host: BackendKube
	// (real kube-apiserver, controller-manager and scheduler from K8sBin)
	// or BackendStub (the built-in stand-in).
	Backend string
	// K8sBin is the folder of the Kubernetes binaries (BackendKube).
	K8sBin string
	// VIPLB is what holds the VIP and balances the API on every
	// control-plane host: VIPLBHaplane (the agent) or VIPLBClassic
	// (keepalived and haproxy configured as in kubeadm's HA guide, to
	// measure the recipe side by side).
	VIPLB string
	// VIPMode is "vrrp" (default) or "bgp": the nodes announce the VIP to
	// a router host running BIRD, with the client behind it (bgp.go).
	VIPMode string
	// Runtime is RuntimeProcess (default: the lab starts the control
	// plane's processes) or RuntimeKubelet (kubelet and containerd on
	// every control-plane host and a worker, kubeadm init and join; needs
	// the kube backend).
	Runtime string
	// ModuleDir is haplane's source (the kubelet runtime builds its pause
	// and workload images from it; default ".").
	ModuleDir string
}

// What holds the VIP and balances the API.
const (
	VIPLBHaplane = "haplane"
	VIPLBClassic = "classic"
)

// Backends of a lab.
const (
	BackendKube = "kube"
	BackendStub = "stub"
)

// ProcSpec is one process a lab host runs: Exec with Args (Exec empty: the
// lab's haplane binary).
type ProcSpec struct {
	Name string
	Exec string
	Args []string
	// Hostname, when set, runs the process in a UTS namespace of its own
	// with that host name: the lab's hosts share the machine's, and
	// kube-scheduler and kube-controller-manager name their Lease holder
	// after it.
	Hostname string
}

// Proc is one process the lab started.
type Proc struct {
	Host string   `json:"host"`
	Name string   `json:"name"`
	PID  int      `json:"pid"`
	Log  string   `json:"log"`
	Exec string   `json:"exec,omitempty"` // empty: the lab's haplane binary
	Args []string `json:"args"`
	// Hostname: see ProcSpec.
	Hostname string `json:"hostname,omitempty"`
	// Pod: a process of a static pod's container that kubelet started
	// (the kubelet runtime), found by name, never recorded.
	Pod bool `json:"-"`
}

// HostState is one host of a running lab.
type HostState struct {
	Name    string `json:"name"`
	NS      string `json:"namespace"`
	Address string `json:"address"`
	Role    string `json:"role"` // control-plane, etcd, client
}

// State is what `lab up` leaves in Dir/state.json for status and down.
type State struct {
	Prefix      string      `json:"prefix"`
	Dir         string      `json:"dir"`
	ClusterFile string      `json:"clusterFile"`
	Endpoint    string      `json:"endpoint"`
	Binary      string      `json:"binary"`
	Hosts       []HostState `json:"hosts"`
	Procs       []Proc      `json:"processes"`
	// SeparateEtcd: etcd members run as their own processes.
	SeparateEtcd bool `json:"separateEtcd,omitempty"`
	// Backend is BackendKube or BackendStub; K8sBin holds the Kubernetes
	// binaries of BackendKube.
	Backend string `json:"backend"`
	K8sBin  string `json:"k8sBin,omitempty"`
	// VIPLB: see Options.VIPLB.
	VIPLB   string    `json:"vipLB,omitempty"`
	Started time.Time `json:"started"`
	// Runtime: see Options.Runtime; NodeHosts are the kubelet runtime's
	// hosts (their mount namespaces' holders, containerd).
	Runtime   string     `json:"runtime,omitempty"`
	NodeHosts []NodeHost `json:"nodeHosts,omitempty"`
}

// NodeLocalAddr is the client host's node-local load balancer (haplane
// agent --role worker), as a worker runs it, in a lab with real
// apiservers and haplane's stack.
const NodeLocalAddr = "127.0.0.1:6443"

// NodeLocalEndpoint is the URL of the client host's node-local load
// balancer, "" when this lab runs none.
func (s *State) NodeLocalEndpoint() string {
	if s.Backend == BackendKube && s.Stack() == VIPLBHaplane && s.Runtime != RuntimeKubelet {
		return "https://" + NodeLocalAddr
	}
	return ""
}

// HostDir is where a host's files live in the lab (its /etc/kubernetes).
func (s *State) HostDir(host string) string { return filepath.Join(s.Dir, "hosts", host) }

// Host returns a host by name.
func (s *State) Host(name string) (HostState, bool) {
	for _, h := range s.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return HostState{}, false
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// LoadState reads a lab's state.
func LoadState(dir string) (*State, error) {
	data, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, fmt.Errorf("lab: no lab state in %s (is a lab up?): %w", dir, err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab: state %s: %w", statePath(dir), err)
	}
	return &s, nil
}

func (s *State) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(s.Dir) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(s.Dir))
}

// setDefaults fills in what the flags left out and checks the rest,
// including what the chosen stack needs on this machine.
func (o *Options) setDefaults() error {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Nodes < 1 || o.Nodes > 9 {
		return fmt.Errorf("lab: --nodes %d: between 1 and 9", o.Nodes)
	}
	switch o.Topology {
	case "":
		o.Topology = config.TopologyStacked
	case config.TopologyStacked, config.TopologyExternal:
	default:
		return fmt.Errorf("lab: --topology %q: stacked or external", o.Topology)
	}
	if o.Dir == "" {
		return errors.New("lab: a state folder is required")
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Binary == "" {
		bin, err := os.Executable()
		if err != nil {
			return err
		}
		o.Binary = bin
	}
	switch o.Backend {
	case "":
		o.Backend = BackendStub
	case BackendStub:
	case BackendKube:
		if o.K8sBin == "" {
			return errors.New("lab: the kube backend needs the folder of the Kubernetes binaries")
		}
	default:
		return fmt.Errorf("lab: --backend %q: kube or stub", o.Backend)
	}
	if o.VIPLB == "" {
		o.VIPLB = VIPLBHaplane
	}
	switch {
	case o.VIPMode == "" || o.VIPMode == VIPModeVRRP:
	case o.VIPMode == VIPModeBGP && o.VIPLB == VIPLBHaplane:
		o.VIPLB = VIPLBHaplaneBGP
	case o.VIPMode == VIPModeBGP:
		return fmt.Errorf("lab: --vip-mode bgp needs --vip-lb %s", VIPLBHaplane)
	default:
		return fmt.Errorf("lab: --vip-mode %q: vrrp or bgp", o.VIPMode)
	}
	switch o.Runtime {
	case "":
		o.Runtime = RuntimeProcess
	case RuntimeProcess:
	case RuntimeKubelet:
		if o.Backend != BackendKube || o.VIPLB != VIPLBHaplane {
			return FlagError{fmt.Errorf("lab: --runtime kubelet runs with --backend kube and --vip-lb haplane so far")}
		}
		if o.ModuleDir == "" {
			o.ModuleDir = "."
		}
	default:
		return FlagError{fmt.Errorf("lab: --runtime %q: process or kubelet", o.Runtime)}
	}
	stack, ok := StackNamed(o.VIPLB)
	if !ok {
		return fmt.Errorf("lab: --vip-lb %q: %s", o.VIPLB, strings.Join(StackNames(), " or "))
	}
	if err := stack.Prepare(o); err != nil {
		return err
	}
	return nil
}

// ClusterFile returns the lab's cluster file.
func ClusterFile(o Options) []byte {
	eo := config.ExampleOptions{Name: "lab", VIP: VIP.String(), Interface: "eth0"}
	if o.Runtime == RuntimeKubelet && o.Topology != config.TopologyExternal {
		eo.EtcdRunBy = config.EtcdRunByKubelet // kubeadm's etcd static pods
	}
	if o.VIPMode == VIPModeBGP {
		eo.BGP = bgpExample()
	}
	for i := range o.Nodes {
		eo.Nodes = append(eo.Nodes, config.Node{Name: fmt.Sprintf("cp%d", i+1), Address: fmt.Sprintf("10.77.0.%d", 11+i)})
	}
	if o.Topology == config.TopologyExternal {
		for i := range 3 {
			eo.EtcdNodes = append(eo.EtcdNodes, config.EtcdNode{Name: fmt.Sprintf("etcd%d", i+1), Address: fmt.Sprintf("10.77.0.%d", 21+i)})
		}
	}
	return config.Example(eo)
}

// Up builds the network, the cluster file and the PKI, and starts every
// process of the stack's plan. On failure it tears down what it made.
func Up(o Options, plan func(c *config.Cluster) *pki.Plan) (st *State, err error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if err := RequireRoot(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(statePath(o.Dir)); err == nil {
		return nil, fmt.Errorf("lab: a lab is already up in %s; run `haplane lab down` first", o.Dir)
	}
	// Leftovers of a crashed lab of the same prefix would clash.
	if err := Sweep(o.Prefix); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "logs"), 0o700); err != nil {
		return nil, err
	}
	st = &State{Prefix: o.Prefix, Dir: o.Dir, ClusterFile: filepath.Join(o.Dir, "haplane.yaml"), Started: time.Now().UTC(),
		SeparateEtcd: o.SeparateEtcd || o.Runtime == RuntimeKubelet,
		Backend:      o.Backend, K8sBin: o.K8sBin, VIPLB: o.VIPLB, Runtime: o.Runtime}
	defer func() {
		if err != nil {
			fmt.Fprintf(o.Out, "lab: start failed, tearing down: %v\n", err)
			_ = Down(o.Dir, o.Prefix)
		}
	}()

	// The binary, copied so the lab outlives a `go run` build folder.
	st.Binary = filepath.Join(o.Dir, "haplane")
	if err := copyFile(o.Binary, st.Binary, 0o755); err != nil {
		return st, fmt.Errorf("lab: copy binary: %w", err)
	}
	if err := os.WriteFile(st.ClusterFile, ClusterFile(o), 0o644); err != nil {
		return st, err
	}
	c, err := config.Load(st.ClusterFile)
	if err != nil {
		return st, fmt.Errorf("lab: generated cluster file: %w", err)
	}
	st.Endpoint = fmt.Sprintf("https://%s:%d", c.ControlPlaneEndpoint.VIP, c.ControlPlaneEndpoint.Port)
	if err := st.save(); err != nil {
		return st, err
	}

	fmt.Fprintf(o.Out, "lab: generating the PKI for %d control-plane nodes\n", len(c.Nodes))
	files, _, err := pki.Generate(plan(c), nil, time.Now())
	if err != nil {
		return st, err
	}
	if _, err := pki.WriteTree(filepath.Join(o.Dir, "hosts"), files); err != nil {
		return st, err
	}

	fmt.Fprintf(o.Out, "lab: creating hosts as network namespaces %s-* on %s\n", o.Prefix, Subnet)
	n, err := NewNet(o.Prefix)
	if err != nil {
		return st, err
	}
	add := func(name, role string, a netip.Addr) error {
		h, err := n.AddHost(name, a, Subnet.Bits())
		if err != nil {
			return err
		}
		st.Hosts = append(st.Hosts, HostState{Name: name, NS: h.NS, Address: a.String(), Role: role})
		return st.save()
	}
	for _, nd := range c.Nodes {
		if err := add(nd.Name, pki.RoleControlPlane, nd.Addr()); err != nil {
			return st, err
		}
	}
	if c.Etcd.Topology == config.TopologyExternal {
		for _, e := range c.Etcd.Nodes {
			if err := add(e.Name, pki.RoleEtcd, netip.MustParseAddr(e.Address)); err != nil {
				return st, err
			}
		}
	}
	if o.Runtime == RuntimeKubelet {
		if err := add(WorkerName, "worker", WorkerAddr); err != nil {
			return st, err
		}
	}
	if err := add("client", "client", ClientAddr); err != nil {
		return st, err
	}
	if c.VIP.BGPMode() {
		if err := setupBGPNet(st, n, c); err != nil {
			return st, err
		}
	}

	if o.Runtime == RuntimeKubelet {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		return st, kubeletUp(ctx, st, c, o)
	}
	for _, h := range st.Hosts {
		specs, err := StackOf(st).Procs(st, c, h)
		if err != nil {
			return st, err
		}
		for _, spec := range specs {
			p, err := st.start(h, spec)
			if err != nil {
				return st, err
			}
			fmt.Fprintf(o.Out, "lab: %s: started %s (pid %d)\n", h.Name, p.Name, p.PID)
		}
	}
	return st, nil
}

// start runs a process inside h's namespace, detached in its own session
// so it outlives `lab up`, with output in a log file.
func (s *State) start(h HostState, spec ProcSpec) (Proc, error) {
	name, args := spec.Name, spec.Args
	exe := spec.Exec
	if exe == "" {
		exe = s.Binary
	}
	logPath := filepath.Join(s.Dir, "logs", h.Name+"-"+name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return Proc{}, err
	}
	defer logf.Close()
	hh := &Host{NS: h.NS}
	cmd := hh.Command(exe, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if nh := s.nodeHost(h.Name); nh != nil {
		cmd = nodeCommand(nh, exe, args)
	} else if spec.Hostname != "" {
		// ip netns exec, then sh, then the program: one PID throughout.
		cmd = hh.Command("sh", append([]string{"-c", `hostname "$1" && shift && exec "$@"`, "sh", spec.Hostname, exe}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWUTS}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = s.Dir
	if err := cmd.Start(); err != nil {
		return Proc{}, fmt.Errorf("lab: start %s on %s: %w", name, h.Name, err)
	}
	p := Proc{Host: h.Name, Name: name, PID: cmd.Process.Pid, Log: logPath, Exec: spec.Exec, Args: args, Hostname: spec.Hostname}
	_ = cmd.Process.Release()
	s.Procs = append(s.Procs, p)
	return p, s.save()
}

// Down stops every process the lab started (SIGTERM to its session, SIGKILL
// after a grace period), deletes its namespaces and its state. It is
// idempotent and works after a crash: without a state file it still sweeps
// the namespaces of prefix.
func Down(dir, prefix string) error {
	var errs []error
	if st, err := LoadState(dir); err == nil {
		prefix = st.Prefix
		errs = append(errs, kubeletDown(st)...)
		stopAll(st.Procs, 5*time.Second)
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := Sweep(prefix); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pids are the processes' PIDs.
func pids(procs []Proc) []int {
	out := make([]int, len(procs))
	for i, p := range procs {
		out[i] = p.PID
	}
	return out
}

// stopAll sends SIGTERM to every process's session, then SIGKILL to what
// is left after grace.
func stopAll(procs []Proc, grace time.Duration) {
	for _, p := range procs {
		if netns.Alive(p.PID) {
			// Setsid made the PID its process group's leader: signal the
			// group so `ip netns exec` and its child both get it.
			_ = syscall.Kill(-p.PID, syscall.SIGTERM)
		}
	}
	netns.WaitOrKill(pids(procs), grace, func(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) })
}

// AddHost adds a host to a running lab (a node about to join), with no
// process on it yet.
func (s *State) AddHost(name, role string, addr netip.Addr) (HostState, error) {
	if _, ok := s.Host(name); ok {
		return HostState{}, fmt.Errorf("lab: host %s exists", name)
	}
	if !Subnet.Contains(addr) {
		return HostState{}, fmt.Errorf("lab: %s is outside %s", addr, Subnet)
	}
	h, err := (&Net{Prefix: s.Prefix}).AddHost(name, addr, Subnet.Bits())
	if err != nil {
		return HostState{}, err
	}
	hs := HostState{Name: name, NS: h.NS, Address: addr.String(), Role: role}
	s.Hosts = append(s.Hosts, hs)
	return hs, s.save()
}

// Run starts a process on a host of a running lab and records it.
func (s *State) Run(host string, spec ProcSpec) (Proc, error) {
	h, ok := s.Host(host)
	if !ok {
		return Proc{}, fmt.Errorf("lab: no host %s", host)
	}
	return s.start(h, spec)
}

// Restart starts again a process of the lab that stopped (after a chaos
// step), with the same arguments, and records its new PID.
func (s *State) Restart(host, name string) (Proc, error) {
	h, ok := s.Host(host)
	if !ok {
		return Proc{}, fmt.Errorf("lab: no host %s", host)
	}
	for i, p := range s.Procs {
		if p.Host != host || p.Name != name {
			continue
		}
		if netns.Alive(p.PID) {
			return Proc{}, fmt.Errorf("lab: %s on %s still runs (pid %d)", name, host, p.PID)
		}
		s.Procs = append(s.Procs[:i], s.Procs[i+1:]...)
		return s.start(h, ProcSpec{Name: name, Exec: p.Exec, Args: p.Args, Hostname: p.Hostname})
	}
	if nh := s.nodeHost(host); nh != nil {
		return waitPodProcess(nh, name, 2*time.Minute)
	}
	return Proc{}, fmt.Errorf("lab: no process %s on %s", name, host)
}

// Replace starts a stopped process of the lab again with the same
// arguments from another executable (a new release of it), and records
// it so later restarts keep the new one.
func (s *State) Replace(host, name, exe string) (Proc, error) {
	for i, p := range s.Procs {
		if p.Host == host && p.Name == name {
			s.Procs[i].Exec = exe
			return s.Restart(host, name)
		}
	}
	return Proc{}, fmt.Errorf("lab: no process %s on %s", name, host)
}

// Signal sends sig to one process of the lab (its whole session; a
// static pod's process alone).
func (s *State) Signal(host, name string, sig syscall.Signal) error {
	p, ok := s.Proc(host, name)
	if !ok {
		return fmt.Errorf("lab: no process %s on %s", name, host)
	}
	if p.Pod {
		return syscall.Kill(p.PID, sig)
	}
	return syscall.Kill(-p.PID, sig)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// Topology is the lab's etcd topology: external when it has etcd hosts.
func (s *State) Topology() string {
	for _, h := range s.Hosts {
		if h.Role == pki.RoleEtcd {
			return config.TopologyExternal
		}
	}
	return config.TopologyStacked
}

// EtcdHosts are the hosts that run an etcd member.
func (s *State) EtcdHosts() []string {
	role := pki.RoleControlPlane
	if s.Topology() == config.TopologyExternal {
		role = pki.RoleEtcd
	}
	var out []string
	for _, h := range s.Hosts {
		if h.Role == role {
			out = append(out, h.Name)
		}
	}
	return out
}

// EtcdProc is the process that holds host's etcd member: its own, or the
// agent it is embedded in.
func (s *State) EtcdProc(host string) string {
	if s.SeparateEtcd {
		return "etcd"
	}
	return "agent"
}

// APIServerProc is the name of the API server processes.
func (s *State) APIServerProc() string {
	if s.Backend == BackendKube {
		return "kube-apiserver"
	}
	return "backend"
}

// Proc returns a process of the lab by host and name.
func (s *State) Proc(host, name string) (Proc, bool) {
	for _, p := range s.Procs {
		if p.Host == host && p.Name == name {
			return p, true
		}
	}
	if nh := s.nodeHost(host); nh != nil {
		return podProcess(nh, name)
	}
	return Proc{}, false
}

// CAFile is the cluster CA, which the client verifies the API with.
func (s *State) CAFile() string { return filepath.Join(s.HostDir("cp1"), "pki", "ca.crt") }

// Kubectl returns kubectl run in the client host with one of cp1's
// kubeconfigs (admin.conf and super-admin.conf point at the VIP).
func (s *State) Kubectl(kubeconfig string, args ...string) *exec.Cmd {
	kc := filepath.Join(s.HostDir("cp1"), kubeconfig)
	return (&Host{NS: s.Prefix + "-client"}).Command(filepath.Join(s.K8sBin, "kubectl"), append([]string{"--kubeconfig", kc}, args...)...)
}

func (s *State) netHost(name string) (*Host, error) {
	h, ok := s.Host(name)
	if !ok {
		return nil, fmt.Errorf("lab: no host %s", name)
	}
	return (&Net{Prefix: s.Prefix}).Attach(name, h.NS), nil
}

// SetLink takes a host's link down or up (see Host.SetLink).
func (s *State) SetLink(host string, up bool) error {
	h, err := s.netHost(host)
	if err != nil {
		return err
	}
	return h.SetLink(up)
}

// SetPartitioned cuts a host off the lab network, or heals it (see
// Host.SetPartitioned).
func (s *State) SetPartitioned(host string, on bool) error {
	h, err := s.netHost(host)
	if err != nil {
		return err
	}
	return h.SetPartitioned(on)
}

// Stack names what holds the VIP and balances the API: VIPLBHaplane or
// VIPLBClassic.
func (s *State) Stack() string {
	if s.VIPLB == "" {
		return VIPLBHaplane
	}
	return s.VIPLB
}

// VIPLBProcs are the processes of a control-plane host that hold the VIP
// and balance the API.
func (s *State) VIPLBProcs() []string { return StackOf(s).VIPLBProcs() }

// AllAlive reports whether every process of the lab runs.
func (s *State) AllAlive() bool {
	for _, p := range s.Procs {
		if !netns.Alive(p.PID) {
			return false
		}
	}
	return true
}

// DownDir tears down the lab whose state is in dir, of the prefix its
// state names (DefaultPrefix without one), and returns that prefix.
func DownDir(dir string) (string, error) {
	if err := RequireRoot(); err != nil {
		return "", err
	}
	prefix := DefaultPrefix
	if st, err := LoadState(dir); err == nil {
		prefix = st.Prefix
	}
	return prefix, Down(dir, prefix)
}

// FlagError is an option that was asked wrongly (a usage error), rather
// than a lab that failed.
type FlagError struct{ Err error }

func (e FlagError) Error() string { return e.Err.Error() }
func (e FlagError) Unwrap() error { return e.Err }

// ResolveBackend sets the API server of the lab to backend and finds its
// binaries: the folder in K8sBin, checked, or version's, built and cached
// (progress to out). Real Kubernetes runs etcd as kubeadm does, as a
// process of its own (the static pod), unless separateEtcdSet says the
// caller chose.
func (o *Options) ResolveBackend(ctx context.Context, backend, version string, separateEtcdSet bool, out io.Writer) error {
	o.Backend = backend
	switch backend {
	case BackendStub:
		if o.K8sBin != "" {
			return FlagError{errors.New("--k8s-bin goes with --backend kube")}
		}
	case BackendKube:
		if err := RequireRoot(); err != nil {
			return err
		}
		if o.K8sBin != "" {
			if err := CheckK8sBin(o.K8sBin, ""); err != nil {
				return FlagError{fmt.Errorf("--k8s-bin: %w", err)}
			}
		} else {
			bin, err := K8sBinaries(ctx, version, out)
			if err != nil {
				return err
			}
			o.K8sBin = bin
		}
		if !separateEtcdSet {
			o.SeparateEtcd = true
		}
	default:
		return FlagError{fmt.Errorf("--backend %q: kube (real Kubernetes) or stub (built-in stand-in)", backend)}
	}
	return nil
}

// AddControlPlane adds an empty control-plane host called name at addr
// to the running lab, for a node to join (a FlagError on a bad address).
func (s *State) AddControlPlane(name, addr string) (HostState, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return HostState{}, FlagError{err}
	}
	return s.AddHost(name, "control-plane", a)
}

// AdminKubectl runs kubectl in the client host against the VIP as the
// cluster admin (admin.conf), on the given streams: kubectl's exit code
// when it ran and failed, an error when it could not run.
func (s *State) AdminKubectl(stdin io.Reader, stdout, stderr io.Writer, args ...string) (int, error) {
	if s.Backend != BackendKube {
		return 0, errors.New("lab: this lab runs the stub apiserver; kubectl needs a lab up with --backend kube")
	}
	k := s.Kubectl("admin.conf", args...)
	k.Stdin, k.Stdout, k.Stderr = stdin, stdout, stderr
	err := k.Run()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}
