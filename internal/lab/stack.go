package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/render"
)

// Stack is one way of running a lab's hosts: what holds the VIP and
// balances the API on the control-plane hosts, hence which processes each
// host runs, how the lab is observed, and when it counts as settled. The
// lab's driver (Up, chaos, status) only asks its Stack, so a further way
// to run the lab (a kubelet runtime, a BGP VIP) is one more registered
// Stack, not a change to the commands.
type Stack interface {
	// Name is the value of lab up's --vip-lb that picks the stack.
	Name() string
	// Prepare checks what the stack needs on this machine and adjusts
	// the options it depends on, before anything is built.
	Prepare(o *Options) error
	// Procs is the process plan of host h: what it runs, with which
	// arguments, in the order they start. It may write the files those
	// processes read into the host's folder.
	Procs(st *State, c *config.Cluster, h HostState) ([]ProcSpec, error)
	// VIPLBProcs names the processes of a control-plane host that hold
	// the VIP and balance the API (the ones a chaos scenario kills).
	VIPLBProcs() []string
	// Status observes every host of the lab, as lab status shows it.
	Status(st *State) View
	// Holder says who holds the VIP: a host, "nobody", or "a+b" while two
	// claim it.
	Holder(st *State) string
	// Steady reports whether v is the steady state lab up waits for; c
	// is the lab's cluster file (nil when it could not be read).
	Steady(c *config.Cluster, v View) bool
	// Hold is how long the VIP's holder must stay put, on top of Steady,
	// before lab up reports.
	Hold() time.Duration
	// Settled reports whether the lab is back to its steady state, so
	// the next chaos scenario starts from a healthy cluster.
	Settled(st *State) bool
}

// stacks are the registered stacks, in the order their names are listed.
var stacks []Stack

// RegisterStack makes s available by its name (lab up --vip-lb); a later
// stack of the same name replaces the earlier one.
func RegisterStack(s Stack) {
	stacks = slices.DeleteFunc(stacks, func(o Stack) bool { return o.Name() == s.Name() })
	stacks = append(stacks, s)
}

func init() {
	RegisterStack(haplaneStack{})
	RegisterStack(classicStack{})
}

// StackNamed returns the registered stack called name.
func StackNamed(name string) (Stack, bool) {
	i := slices.IndexFunc(stacks, func(s Stack) bool { return s.Name() == name })
	if i < 0 {
		return nil, false
	}
	return stacks[i], true
}

// StackNames lists the registered stacks' names.
func StackNames() []string {
	var names []string
	for _, s := range stacks {
		names = append(names, s.Name())
	}
	return names
}

// StackOf returns the stack the lab runs (the haplane one for a state
// written before stacks had names, or of a name no longer registered).
func StackOf(s *State) Stack {
	if st, ok := StackNamed(s.Stack()); ok {
		return st
	}
	return haplaneStack{}
}

// haplaneStack is haplane's own: the agent holds the VIP and balances the
// API on every control-plane host, and reports both on its /status.
type haplaneStack struct{}

func (haplaneStack) Name() string            { return VIPLBHaplane }
func (haplaneStack) Prepare(*Options) error  { return nil }
func (haplaneStack) VIPLBProcs() []string    { return []string{"agent"} }
func (haplaneStack) Hold() time.Duration     { return 0 }
func (haplaneStack) Holder(st *State) string { return haplaneStack{}.Status(st).VIPOwner }
func (haplaneStack) Settled(st *State) bool  { return haplaneStack{}.Status(st).Settled() }
func (haplaneStack) Steady(c *config.Cluster, v View) bool {
	return atBasePriorities(c, v) && v.Settled()
}

func (haplaneStack) Procs(st *State, c *config.Cluster, h HostState) ([]ProcSpec, error) {
	return hostProcs(st, c, h, func(agent ProcSpec) ([]ProcSpec, error) { return []ProcSpec{agent}, nil })
}

// Status asks every host's agent for /status, from inside its namespace.
func (haplaneStack) Status(st *State) View {
	hosts := st.serverHosts()
	v := ClusterView(st.Endpoint, len(hosts), func(i int) (HostView, []byte, error) {
		h := hosts[i]
		if h.Role == "etcd" && st.SeparateEtcd {
			return HostView{Host: h.Name, Address: h.Address, Role: h.Role}, nil, errNoAgent
		}
		out, err := (&Host{NS: h.NS}).Command(st.Binary, "status", "--raw", "--api-addr", fmt.Sprintf("127.0.0.1:%d", agent.DefaultAPIPort)).Output()
		return HostView{Host: h.Name, Address: h.Address, Role: h.Role}, out, err
	})
	st.fillEtcd(&v)
	return v
}

// classicStack is kubeadm's HA guide: keepalived holds the VIP and
// haproxy balances the API, to measure the recipe side by side.
type classicStack struct{}

// classicSettleHold is how long the classic stack's VIP holder must stay
// put before lab up reports: past the moment when two keepalived backups
// that took the VIP together sort out which keeps it (an advert, 1 s).
const classicSettleHold = 1500 * time.Millisecond

func (classicStack) Name() string            { return VIPLBClassic }
func (classicStack) VIPLBProcs() []string    { return []string{"keepalived", "haproxy"} }
func (classicStack) Hold() time.Duration     { return classicSettleHold }
func (classicStack) Holder(st *State) string { return st.VIPHolder() }

func (classicStack) Prepare(o *Options) error {
	for _, b := range []string{"keepalived", "haproxy", "curl"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("lab: --vip-lb classic needs %s (apt-get install keepalived haproxy curl)", b)
		}
	}
	// keepalived and haproxy hold no etcd member.
	o.SeparateEtcd = true
	return nil
}

// Steady: keepalived says nothing of its priorities, and starts every
// host as a backup: whoever times out first takes the VIP, and the first
// node (the guide's MASTER, the highest priority) takes it back once its
// check script has risen. Steady is the VIP on the first node.
func (classicStack) Steady(c *config.Cluster, v View) bool {
	if c != nil && len(c.Nodes) > 0 && v.VIPOwner != c.Nodes[0].Name {
		return false
	}
	return atBasePriorities(c, v) && v.Settled()
}

// Settled: keepalived and haproxy report nothing, so every process runs
// and the API answers through the VIP.
func (classicStack) Settled(st *State) bool {
	return classicStack{}.Status(st).Settled() && st.AllAlive() && st.Probe(3*time.Second) == nil
}

// Status: no agent to ask, the VIP's holder is whoever has the address.
func (classicStack) Status(st *State) View {
	v := View{Endpoint: st.Endpoint, VIPOwner: st.VIPHolder()}
	for _, h := range st.serverHosts() {
		hv := HostView{Host: h.Name, Address: h.Address, Role: h.Role, Agent: "classic"}
		hv.HoldsVIP = slices.Contains(strings.Split(v.VIPOwner, "+"), h.Name)
		v.Hosts = append(v.Hosts, hv)
	}
	st.fillEtcd(&v)
	return v
}

func (classicStack) Procs(st *State, c *config.Cluster, h HostState) ([]ProcSpec, error) {
	return hostProcs(st, c, h, func(ProcSpec) ([]ProcSpec, error) { return classicProcs(st, c, h) })
}

// atBasePriorities reports whether every host that tells its priority is
// at the one of the cluster file: each tracked check has risen again.
func atBasePriorities(c *config.Cluster, v View) bool {
	if c == nil {
		return true
	}
	for _, h := range v.Hosts {
		if n, ok := c.NodeByName(h.Host); ok && h.Priority != 0 && h.Priority != n.Priority {
			return false
		}
	}
	return true
}

// hostProcs is the process plan every stack shares: the agent (with the
// etcd member of a stacked or external etcd host) and, on control-plane
// hosts, what holds the VIP and balances the API (vipLB, given the
// agent's process) and the API server: the real kube-apiserver,
// kube-controller-manager and kube-scheduler with kubeadm's flags, or the
// stub stand-in.
func hostProcs(st *State, c *config.Cluster, h HostState, vipLB func(agent ProcSpec) ([]ProcSpec, error)) ([]ProcSpec, error) {
	hostDir := st.HostDir(h.Name)
	pkiDir := filepath.Join(hostDir, "pki")
	common := []string{"--config", st.ClusterFile, "--node", h.Name, "--pki-dir", pkiDir}
	etcdData := filepath.Join(hostDir, "etcd")
	agentProc := ProcSpec{Name: "agent", Args: append(append([]string{"--log-format", "json", "agent"}, common...),
		"--state-dir", filepath.Join(hostDir, "state"), "--etcd-data-dir", etcdData,
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", agent.DefaultAPIPort))}
	etcdProc := ProcSpec{Name: "etcd", Args: append(append([]string{"--log-format", "json", "etcd", "run"}, common...), "--data-dir", etcdData)}
	var procs []ProcSpec
	switch h.Role {
	case "control-plane":
		if st.SeparateEtcd && c.Etcd.Topology == config.TopologyStacked {
			procs = append(procs, etcdProc)
			agentProc.Args = append(agentProc.Args, "--no-etcd")
		}
		vl, err := vipLB(agentProc)
		if err != nil {
			return nil, err
		}
		if st.Backend != BackendKube {
			procs = append(procs, ProcSpec{Name: "backend", Args: append([]string{"lab", "backend"}, common...)})
			return append(procs, vl...), nil
		}
		cp, err := render.ControlPlane(c, h.Name, render.ControlPlaneDirs{PKI: pkiDir, Kubeconfigs: hostDir})
		if err != nil {
			return nil, err
		}
		procs = append(procs, vl...)
		procs = append(procs,
			ProcSpec{Name: "kube-apiserver", Exec: filepath.Join(st.K8sBin, "kube-apiserver"), Args: cp.APIServer, Hostname: h.Name},
			ProcSpec{Name: "kube-controller-manager", Exec: filepath.Join(st.K8sBin, "kube-controller-manager"), Args: cp.ControllerManager, Hostname: h.Name},
			ProcSpec{Name: "kube-scheduler", Exec: filepath.Join(st.K8sBin, "kube-scheduler"), Args: cp.Scheduler, Hostname: h.Name})
	case "client":
		if st.NodeLocalEndpoint() == "" {
			return nil, nil
		}
		w, err := workerProc(st, c, h)
		if err != nil {
			return nil, err
		}
		procs = append(procs, w)
	case "etcd":
		if st.SeparateEtcd {
			procs = append(procs, etcdProc)
		} else {
			procs = append(procs, agentProc)
		}
	}
	return procs, nil
}

// workerProc makes the client host a worker too: its own load balancer to
// every apiserver, following the kubernetes Service's endpoints, with
// admin.conf pointed at it as a worker's kubelet.conf would be.
func workerProc(st *State, c *config.Cluster, h HostState) (ProcSpec, error) {
	hostDir := st.HostDir(h.Name)
	admin, err := os.ReadFile(filepath.Join(st.HostDir("cp1"), "admin.conf"))
	if err != nil {
		return ProcSpec{}, fmt.Errorf("lab: node-local kubeconfig: %w", err)
	}
	kc, err := render.NodeLocalKubeconfig(c, admin)
	if err != nil {
		return ProcSpec{}, err
	}
	if err := os.MkdirAll(hostDir, 0o700); err != nil {
		return ProcSpec{}, err
	}
	kcPath := filepath.Join(hostDir, "kubelet.conf")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		return ProcSpec{}, err
	}
	return ProcSpec{Name: "agent", Args: []string{"--log-format", "json", "agent", "--role", "worker",
		"--config", st.ClusterFile, "--node", h.Name, "--pki-dir", filepath.Join(st.HostDir("cp1"), "pki"),
		"--kubeconfig", kcPath, "--listen", NodeLocalAddr,
		"--state-dir", filepath.Join(hostDir, "state"), "--api-addr", fmt.Sprintf("127.0.0.1:%d", agent.DefaultAPIPort)}}, nil
}

// classicProcs writes the kubeadm guide's keepalived and haproxy files for
// a host and returns the two processes that run them in the foreground.
func classicProcs(st *State, c *config.Cluster, h HostState) ([]ProcSpec, error) {
	dir := filepath.Join(st.HostDir(h.Name), "classic")
	files, err := render.Classic(c, h.Name, render.ClassicOptions{Dir: dir})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := os.WriteFile(f.Name, f.Data, f.Mode); err != nil {
			return nil, err
		}
	}
	return []ProcSpec{
		// -n: no fork of the parent (its VRRP child stays in its process
		// group, which the lab signals); -P: VRRP only, as the guide uses
		// no virtual servers; pid files of its own per host.
		{Name: "keepalived", Exec: "keepalived", Args: []string{"-n", "-l", "-D", "-P", "-f", filepath.Join(dir, "keepalived.conf"),
			"-p", filepath.Join(dir, "keepalived.pid"), "-r", filepath.Join(dir, "vrrp.pid")}},
		{Name: "haproxy", Exec: "haproxy", Args: []string{"-db", "-f", filepath.Join(dir, "haproxy.cfg")}},
	}, nil
}

// StartHost starts the processes of the plan of the host called name (a
// host that joined a running lab), in order; on an error, those started
// so far keep running.
func (s *State) StartHost(c *config.Cluster, name string) ([]Proc, error) {
	h, ok := s.Host(name)
	if !ok {
		return nil, FlagError{fmt.Errorf("no host %s", name)}
	}
	specs, err := StackOf(s).Procs(s, c, h)
	if err != nil {
		return nil, err
	}
	var started []Proc
	for _, spec := range specs {
		p, err := s.Run(h.Name, spec)
		if err != nil {
			return started, err
		}
		started = append(started, p)
	}
	return started, nil
}
