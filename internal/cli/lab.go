package cli

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/lab"
	"github.com/haplane/haplane/internal/render"
	"github.com/haplane/haplane/internal/stubapi"
)

// defaultLabDir keeps the lab's state where root's temporary files go.
const defaultLabDir = "/tmp/haplane-lab"

func (a *app) labCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a whole HA control plane on this machine, in network namespaces",
		Long: `lab builds hosts out of Linux network namespaces on a private bridge
(10.77.0.0/24; no host interface is touched), writes a cluster file and the
PKI for them, and runs on every control-plane host an etcd member, an API
server and the haplane agent (VIP and load balancer). A client host reaches
the API through the VIP. Needs root.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", defaultLabDir, "the lab's state folder")
	cmd.AddCommand(a.labUpCmd(&dir), a.labDownCmd(&dir), a.labStatusCmd(&dir), a.labBackendCmd(), a.labProbeCmd(), a.labWatchCmd(), a.labRestartCmd(&dir), a.labAddHostCmd(&dir), a.labStartCmd(&dir), a.labKubectlCmd(&dir), a.labChaosCmd(&dir), a.labObserveCmd())
	return cmd
}

// labProcs lists the processes of a host: the agent (with the etcd member
// of a stacked or external etcd host) and, on control-plane hosts, the API
// server: the real kube-apiserver, kube-controller-manager and
// kube-scheduler with kubeadm's flags, or the stub stand-in.
func labProcs(st *lab.State, c *config.Cluster, h lab.HostState) ([]lab.ProcSpec, error) {
	hostDir := st.HostDir(h.Name)
	pkiDir := filepath.Join(hostDir, "pki")
	common := []string{"--config", st.ClusterFile, "--node", h.Name, "--pki-dir", pkiDir}
	etcdData := filepath.Join(hostDir, "etcd")
	agentProc := lab.ProcSpec{Name: "agent", Args: append(append([]string{"--log-format", "json", "agent"}, common...),
		"--state-dir", filepath.Join(hostDir, "state"), "--etcd-data-dir", etcdData,
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", agent.DefaultAPIPort))}
	etcdProc := lab.ProcSpec{Name: "etcd", Args: append(append([]string{"--log-format", "json", "etcd", "run"}, common...), "--data-dir", etcdData)}
	var procs []lab.ProcSpec
	switch h.Role {
	case "control-plane":
		if st.SeparateEtcd && c.Etcd.Topology == config.TopologyStacked {
			procs = append(procs, etcdProc)
			agentProc.Args = append(agentProc.Args, "--no-etcd")
		}
		vipLB := []lab.ProcSpec{agentProc}
		if st.Stack() == lab.VIPLBClassic {
			var err error
			if vipLB, err = classicProcs(st, c, h); err != nil {
				return nil, err
			}
		}
		if st.Backend != lab.BackendKube {
			procs = append(procs, lab.ProcSpec{Name: "backend", Args: append([]string{"lab", "backend"}, common...)})
			return append(procs, vipLB...), nil
		}
		cp, err := render.ControlPlane(c, h.Name, render.ControlPlaneDirs{PKI: pkiDir, Kubeconfigs: hostDir})
		if err != nil {
			return nil, err
		}
		procs = append(procs, vipLB...)
		procs = append(procs,
			lab.ProcSpec{Name: "kube-apiserver", Exec: filepath.Join(st.K8sBin, "kube-apiserver"), Args: cp.APIServer, Hostname: h.Name},
			lab.ProcSpec{Name: "kube-controller-manager", Exec: filepath.Join(st.K8sBin, "kube-controller-manager"), Args: cp.ControllerManager, Hostname: h.Name},
			lab.ProcSpec{Name: "kube-scheduler", Exec: filepath.Join(st.K8sBin, "kube-scheduler"), Args: cp.Scheduler, Hostname: h.Name})
	case "client":
		if st.NodeLocalEndpoint() == "" {
			return nil, nil
		}
		// The client host is also a worker: its own load balancer to every
		// apiserver, following the kubernetes Service's endpoints, with
		// admin.conf pointed at it as a worker's kubelet.conf would be.
		admin, err := os.ReadFile(filepath.Join(st.HostDir("cp1"), "admin.conf"))
		if err != nil {
			return nil, fmt.Errorf("lab: node-local kubeconfig: %w", err)
		}
		kc, err := render.NodeLocalKubeconfig(c, admin)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(hostDir, 0o700); err != nil {
			return nil, err
		}
		kcPath := filepath.Join(hostDir, "kubelet.conf")
		if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
			return nil, err
		}
		procs = append(procs, lab.ProcSpec{Name: "agent", Args: []string{"--log-format", "json", "agent", "--role", "worker",
			"--config", st.ClusterFile, "--node", h.Name, "--pki-dir", filepath.Join(st.HostDir("cp1"), "pki"),
			"--kubeconfig", kcPath, "--listen", lab.NodeLocalAddr,
			"--state-dir", filepath.Join(hostDir, "state"), "--api-addr", fmt.Sprintf("127.0.0.1:%d", agent.DefaultAPIPort)}})
	case "etcd":
		if st.SeparateEtcd {
			procs = append(procs, etcdProc)
		} else {
			procs = append(procs, agentProc)
		}
	}
	return procs, nil
}

// classicProcs writes the kubeadm guide's keepalived and haproxy files for
// a host and returns the two processes that run them in the foreground.
func classicProcs(st *lab.State, c *config.Cluster, h lab.HostState) ([]lab.ProcSpec, error) {
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
	return []lab.ProcSpec{
		// -n: no fork of the parent (its VRRP child stays in its process
		// group, which the lab signals); -P: VRRP only, as the guide uses
		// no virtual servers; pid files of its own per host.
		{Name: "keepalived", Exec: "keepalived", Args: []string{"-n", "-l", "-D", "-P", "-f", filepath.Join(dir, "keepalived.conf"),
			"-p", filepath.Join(dir, "keepalived.pid"), "-r", filepath.Join(dir, "vrrp.pid")}},
		{Name: "haproxy", Exec: "haproxy", Args: []string{"-db", "-f", filepath.Join(dir, "haproxy.cfg")}},
	}, nil
}

func (a *app) labUpCmd(dir *string) *cobra.Command {
	var o lab.Options
	var backend, k8sVersion string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create the lab and wait until the API answers through the VIP",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Backend = backend
			switch backend {
			case lab.BackendStub:
				if o.K8sBin != "" {
					return usageError{errors.New("--k8s-bin goes with --backend kube")}
				}
			case lab.BackendKube:
				if err := lab.RequireRoot(); err != nil {
					return &ExitError{Code: ExitFailure, Err: err}
				}
				if o.K8sBin != "" {
					if err := lab.CheckK8sBin(o.K8sBin, ""); err != nil {
						return usageError{fmt.Errorf("--k8s-bin: %w", err)}
					}
				} else {
					bin, err := lab.K8sBinaries(cmd.Context(), k8sVersion, a.stderr)
					if err != nil {
						return &ExitError{Code: ExitFailure, Err: err}
					}
					o.K8sBin = bin
				}
			default:
				return usageError{fmt.Errorf("--backend %q: kube (real Kubernetes) or stub (built-in stand-in)", backend)}
			}
			// Real Kubernetes runs etcd as kubeadm does, as a process of its
			// own (the static pod), unless asked otherwise.
			if backend == lab.BackendKube && !cmd.Flags().Changed("separate-etcd") {
				o.SeparateEtcd = true
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			o.Dir, o.Binary, o.Out = *dir, bin, a.stderr
			t0 := time.Now()
			st, err := lab.Up(cmd.Context(), o, pkiPlan, labProcs)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			fmt.Fprintf(a.stderr, "lab: waiting for %s/readyz from the client host\n", st.Endpoint)
			if err := labProbe(cmd.Context(), st, wait); err != nil {
				_ = lab.Down(st.Dir, st.Prefix)
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("lab: the API did not answer through the VIP: %w (logs were in %s/logs; lab torn down)", err, st.Dir)}
			}
			if st.Backend == lab.BackendKube {
				// As kubeadm init does: admin.conf's group gets cluster-admin.
				if out, err := st.Kubectl("super-admin.conf", "create", "clusterrolebinding", "kubeadm:cluster-admins",
					"--clusterrole=cluster-admin", "--group=kubeadm:cluster-admins").CombinedOutput(); err != nil && !strings.Contains(string(out), "AlreadyExists") {
					_ = lab.Down(st.Dir, st.Prefix)
					return &ExitError{Code: ExitFailure, Err: fmt.Errorf("lab: bind kubeadm:cluster-admins: %v: %s (lab torn down)", err, strings.TrimSpace(string(out)))}
				}
			}
			// Let the health checks and tracked priorities settle, so the
			// table shows the steady state rather than the first seconds.
			// Steady means every tracked check has risen again too: each
			// node back at its configured priority.
			base, first := map[string]int{}, ""
			if c, err := config.Load(st.ClusterFile); err == nil {
				for _, n := range c.Nodes {
					base[n.Name] = n.Priority
				}
				if len(c.Nodes) > 0 {
					first = c.Nodes[0].Name
				}
			}
			classic := st.Stack() == lab.VIPLBClassic
			steady := func(v labView) bool {
				for _, h := range v.Hosts {
					if p, ok := base[h.Host]; ok && h.Priority != 0 && h.Priority != p {
						return false
					}
				}
				// keepalived says nothing of its priorities, and starts
				// every host as a backup: whoever times out first takes
				// the VIP, and the first node (the guide's MASTER, the
				// highest priority) takes it back once its check script
				// has risen. Steady is the VIP on the first node.
				if classic && first != "" && v.VIPOwner != first {
					return false
				}
				return v.settled()
			}
			// Two keepalived backups can also time out together and both
			// take the VIP for a moment; the holder must stay put a while.
			hold := time.Duration(0)
			if classic {
				hold = classicSettleHold
			}
			view := collectLabStatus(st)
			holder, since := view.VIPOwner, time.Now()
			for settle := time.Now().Add(20 * time.Second); time.Now().Before(settle) && !(steady(view) && time.Since(since) >= hold); {
				time.Sleep(300 * time.Millisecond)
				view = collectLabStatus(st)
				if view.VIPOwner != holder {
					holder, since = view.VIPOwner, time.Now()
				}
			}
			view.Ready = time.Since(t0).Round(time.Millisecond).String()
			return a.print(view, func(w io.Writer) error {
				fmt.Fprintf(w, "lab is up in %s: endpoint %s (through the VIP), cluster file %s\n\n", view.Ready, st.Endpoint, st.ClusterFile)
				if err := printLabStatus(w, view); err != nil {
					return err
				}
				fmt.Fprintf(w, "\ntry:  haplane lab status    |  ip netns exec %s-client curl --cacert %s %s/readyz\n",
					st.Prefix, filepath.Join(st.HostDir("cp1"), "pki", "ca.crt"), st.Endpoint)
				if st.Backend == lab.BackendKube {
					fmt.Fprintf(w, "      haplane lab kubectl get --raw /readyz   |  haplane lab kubectl get leases -n kube-system\n")
				}
				fmt.Fprintf(w, "      haplane lab chaos --scenario all        |  haplane lab down\n")
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", 3, "control-plane nodes (1..9)")
	f.StringVar(&o.Topology, "topology", "stacked", "etcd topology: stacked or external (three etcd hosts)")
	f.StringVar(&backend, "backend", lab.BackendKube, "API server: kube (real kube-apiserver, kube-controller-manager and kube-scheduler) or stub (built-in TLS /readyz server writing to etcd, for quick tries)")
	f.StringVar(&k8sVersion, "k8s-version", config.DefaultKubernetesVersion, "Kubernetes version of the kube backend (built from the Go module proxy and cached by version)")
	f.StringVar(&o.K8sBin, "k8s-bin", "", "use the Kubernetes binaries in this folder (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) instead of building them")
	f.DurationVar(&wait, "wait", 3*time.Minute, "how long to wait for the API through the VIP")
	f.StringVar(&o.Prefix, "prefix", lab.DefaultPrefix, "namespace name prefix (tests run labs side by side)")
	_ = f.MarkHidden("prefix")
	f.StringVar(&o.VIPLB, "vip-lb", lab.VIPLBHaplane, "what holds the VIP and balances the API: haplane (the agent) or classic (keepalived and haproxy as in kubeadm's HA guide, to compare)")
	f.BoolVar(&o.SeparateEtcd, "separate-etcd", false, "run each etcd member as its own process (as kubelet runs kubeadm's etcd), not inside the agent (default with --backend kube)")
	return cmd
}

// labProbe waits until the client host gets 200 from /readyz through the VIP.
func labProbe(ctx context.Context, st *lab.State, wait time.Duration) error {
	ca := filepath.Join(st.HostDir("cp1"), "pki", "ca.crt")
	cmd := (&lab.Host{NS: st.Prefix + "-client"}).Command(st.Binary, "lab", "probe", "--url", st.Endpoint+"/readyz", "--ca", ca, "--timeout", wait.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (a *app) labDownCmd(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop every process and remove every namespace and file of the lab (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := lab.RequireRoot(); err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			prefix := lab.DefaultPrefix
			if st, err := lab.LoadState(*dir); err == nil {
				prefix = st.Prefix
			}
			if err := lab.Down(*dir, prefix); err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return a.print(map[string]string{"down": *dir}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "lab: down (%s removed, namespaces %s-* deleted)\n", *dir, prefix)
				return err
			})
		},
	}
}

// labHostView is one host in `lab status`.
type labHostView struct {
	Host     string          `json:"host"`
	Address  string          `json:"address"`
	Role     string          `json:"role"`
	Agent    string          `json:"agent"` // up, down
	VRRP     json.RawMessage `json:"vrrp,omitempty"`
	State    string          `json:"vrrpState,omitempty"`
	Priority int             `json:"priority,omitempty"`
	HoldsVIP bool            `json:"holdsVIP"`
	Backends string          `json:"backendsUp,omitempty"`
	Etcd     string          `json:"etcd,omitempty"`
}

type labView struct {
	Endpoint string        `json:"endpoint"`
	VIPOwner string        `json:"vipHolder"`
	Hosts    []labHostView `json:"hosts"`
	Ready    string        `json:"readyAfter,omitempty"`
}

// collectLabStatus asks every host's agent for /status, from inside its
// namespace.
func collectLabStatus(st *lab.State) labView {
	var hosts []lab.HostState
	for _, h := range st.Hosts {
		if h.Role != "client" {
			hosts = append(hosts, h)
		}
	}
	if st.Stack() == lab.VIPLBClassic {
		// No agent to ask: the VIP's holder is whoever has the address.
		v := labView{Endpoint: st.Endpoint, VIPOwner: st.VIPHolder()}
		for _, h := range hosts {
			hv := labHostView{Host: h.Name, Address: h.Address, Role: h.Role, Agent: "classic"}
			hv.HoldsVIP = slices.Contains(strings.Split(v.VIPOwner, "+"), h.Name)
			v.Hosts = append(v.Hosts, hv)
		}
		fillLabEtcd(st, &v)
		return v
	}
	v := clusterView(st.Endpoint, len(hosts), func(i int) (labHostView, []byte, error) {
		h := hosts[i]
		out, err := (&lab.Host{NS: h.NS}).Command(st.Binary, "status", "--raw", "--api-addr", fmt.Sprintf("127.0.0.1:%d", agent.DefaultAPIPort)).Output()
		return labHostView{Host: h.Name, Address: h.Address, Role: h.Role}, out, err
	})
	fillLabEtcd(st, &v)
	return v
}

// fillLabEtcd fills the etcd column of the hosts whose member runs as its
// own process (no agent reports it) from one `haplane etcd status` asked
// from the client host, as an operator would: ready, ready (leader),
// learner, unhealthy or down.
func fillLabEtcd(st *lab.State, v *labView) {
	members := st.EtcdHosts()
	need := false
	for _, h := range v.Hosts {
		need = need || h.Etcd == "" && slices.Contains(members, h.Host)
	}
	if !need {
		return
	}
	cmd := (&lab.Host{NS: st.Prefix + "-client"}).Command(st.Binary, "-o", "json", "etcd", "status",
		"--config", st.ClusterFile, "--pki-dir", filepath.Join(st.HostDir("cp1"), "pki"))
	out, _ := cmd.Output() // non-zero without fault tolerance; the document still says
	var rep etcdnode.Report
	if json.Unmarshal(out, &rep) != nil {
		return
	}
	state := map[string]string{}
	for _, m := range rep.Members {
		switch {
		case m.Healthy && m.Leader:
			state[m.Name] = "ready (leader)"
		case m.Healthy:
			state[m.Name] = "ready"
		case m.Learner && m.Serving:
			state[m.Name] = "learner"
		case m.Reachable:
			state[m.Name] = "unhealthy"
		default:
			state[m.Name] = "down"
		}
	}
	for i, h := range v.Hosts {
		if h.Etcd == "" && slices.Contains(members, h.Host) {
			v.Hosts[i].Etcd = cmp.Or(state[h.Host], "down")
		}
	}
}

// clusterView builds the one-screen view of n hosts from each one's agent
// /status document (fetch returns the host and the document, or an error
// when its agent does not answer).
func clusterView(endpoint string, n int, fetch func(i int) (labHostView, []byte, error)) labView {
	v := labView{Endpoint: endpoint}
	for i := range n {
		hv, out, err := fetch(i)
		hv.Agent = "down"
		var s struct {
			Parts struct {
				VIP *struct {
					State    string `json:"state"`
					Priority int    `json:"priority"`
				} `json:"vip"`
				LB *struct {
					Backends []struct {
						Health string `json:"health"`
					} `json:"backends"`
				} `json:"lb"`
				Etcd *struct {
					Ready bool `json:"ready"`
				} `json:"etcd"`
			} `json:"parts"`
		}
		if err == nil && json.Unmarshal(out, &s) == nil {
			hv.Agent = "up"
			if vp := s.Parts.VIP; vp != nil {
				hv.State, hv.Priority = vp.State, vp.Priority
				hv.HoldsVIP = vp.State == "master"
				if hv.HoldsVIP {
					if v.VIPOwner != "" {
						v.VIPOwner += "+"
					}
					v.VIPOwner += hv.Host
				}
			}
			if l := s.Parts.LB; l != nil {
				up, live := 0, 0
				for _, b := range l.Backends {
					switch b.Health {
					case "up":
						up++
					case "live":
						live++
					}
				}
				hv.Backends = fmt.Sprintf("%d/%d", up, len(l.Backends))
				if up == 0 && live > 0 {
					// Panic routing: clients go to the live ones.
					hv.Backends += fmt.Sprintf(" (panic: %d live)", live)
				}
			}
			if e := s.Parts.Etcd; e != nil {
				hv.Etcd = map[bool]string{true: "ready", false: "starting"}[e.Ready]
			}
		}
		v.Hosts = append(v.Hosts, hv)
	}
	if v.VIPOwner == "" {
		v.VIPOwner = "nobody"
	}
	return v
}

// settled reports one VIP holder, every agent up, every backend up and
// every etcd member ready, and the VIP on the host of the highest
// priority: the lab's cluster file leaves preemption on, so a lower
// holder is a moment in an election that is still going (a host whose
// apiserver came up last takes the VIP back an advertisement later).
// classicSettleHold is how long the classic stack's VIP holder must stay
// put before lab up reports: past the moment when two keepalived backups
// that took the VIP together sort out which keeps it (an advert, 1 s).
const classicSettleHold = 1500 * time.Millisecond

func (v labView) settled() bool {
	if v.VIPOwner == "nobody" || strings.Contains(v.VIPOwner, "+") {
		return false
	}
	top := 0
	for _, h := range v.Hosts {
		if h.Agent == "up" && h.State != "" && h.Priority > top {
			top = h.Priority
		}
	}
	for _, h := range v.Hosts {
		if h.HoldsVIP && h.Agent == "up" && h.Priority < top {
			return false
		}
	}
	for _, h := range v.Hosts {
		if h.Agent == "classic" {
			if h.Etcd != "" && !strings.HasPrefix(h.Etcd, "ready") {
				return false
			}
			continue // keepalived and haproxy say nothing of their own
		}
		if h.Agent != "up" || (h.Etcd != "" && !strings.HasPrefix(h.Etcd, "ready")) {
			return false
		}
		if up, total, ok := strings.Cut(h.Backends, "/"); ok && up != total {
			return false
		}
	}
	return true
}

func printLabStatus(w io.Writer, v labView) error {
	fmt.Fprintf(w, "VIP %s held by: %s\n", v.Endpoint, v.VIPOwner)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tROLE\tAGENT\tVRRP\tPRIORITY\tVIP\tBACKENDS UP\tETCD")
	for _, h := range v.Hosts {
		vip := ""
		if h.HoldsVIP {
			vip = "*"
		}
		dash := func(s string) string {
			if s == "" {
				return "-"
			}
			return s
		}
		prio := "-"
		if h.Priority != 0 {
			prio = strconv.Itoa(h.Priority)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, h.Address, h.Role, h.Agent, dash(h.State), prio, vip, dash(h.Backends), dash(h.Etcd))
	}
	return tw.Flush()
}

func (a *app) labStatusCmd(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every host of the lab: agent, VRRP state, who holds the VIP, backends, etcd",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			st, err := lab.LoadState(*dir)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			v := collectLabStatus(st)
			return a.print(v, func(w io.Writer) error { return printLabStatus(w, v) })
		},
	}
}

// labBackendCmd runs the stub API server of a lab host: the node's
// apiserver certificate on its address and port 6443, writes to etcd with
// the apiserver-etcd-client certificate.
func (a *app) labBackendCmd() *cobra.Command {
	var cfgPath, node, pkiDir string
	cmd := &cobra.Command{
		Use:    "backend",
		Short:  "Run the built-in stub kube-apiserver of a node (used by lab up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			n, ok := c.NodeByName(node)
			if !ok {
				return usageError{fmt.Errorf("--node %q is not a control-plane node", node)}
			}
			cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "apiserver.crt"), filepath.Join(pkiDir, "apiserver.key"))
			if err != nil {
				return err
			}
			tc, err := etcdnode.ClientTLS{
				CertFile: filepath.Join(pkiDir, "apiserver-etcd-client.crt"),
				KeyFile:  filepath.Join(pkiDir, "apiserver-etcd-client.key"),
				CAFile:   filepath.Join(pkiDir, "etcd", "ca.crt"),
			}.Config()
			if err != nil {
				return err
			}
			var eps []string
			for _, m := range c.EtcdMembers() {
				eps = append(eps, etcdnode.ClientURLFor(m.Address, c.Etcd.ClientPort))
			}
			cli, err := etcdnode.NewClient(eps, tc, 2*time.Second)
			if err != nil {
				return err
			}
			defer cli.Close()
			addr := net.JoinHostPort(n.Address, strconv.Itoa(c.ControlPlaneEndpoint.APIServerPort))
			s, err := stubapi.Start(stubapi.Config{Addr: addr, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, KV: stubapi.EtcdKV{Client: cli}, Name: node, Log: a.logger()})
			if err != nil {
				return err
			}
			a.logger().Info("stub apiserver serving", "addr", addr)
			<-cmd.Context().Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return s.Shutdown(ctx)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&node, "node", "", "node name")
	cmd.Flags().StringVar(&pkiDir, "pki-dir", "", "the node's PKI folder")
	return cmd
}

// labProbeCmd waits until url answers 200, verifying against ca.
func (a *app) labProbeCmd() *cobra.Command {
	var url, caPath string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:    "probe",
		Short:  "Wait until an HTTPS URL answers 200 (used by lab up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pool, err := loadCertPool(caPath)
			if err != nil {
				return err
			}
			client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true,
			}}
			deadline := time.Now().Add(timeout)
			var last error
			for time.Now().Before(deadline) {
				resp, err := client.Get(url)
				if err == nil {
					body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						fmt.Fprintf(a.stdout, "%s: %s\n", url, strings.TrimSpace(string(body)))
						return nil
					}
					err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
				}
				last = err
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
			return fmt.Errorf("%s not ready after %s: %v", url, timeout, last)
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "URL")
	cmd.Flags().StringVar(&caPath, "ca", "", "CA bundle")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait")
	return cmd
}

// watchResult is what `lab watch` reports.
type watchResult struct {
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	Slow     int           `json:"slow"` // over 1s
	MaxGap   time.Duration `json:"maxGapNs"`
	Errors   []string      `json:"errors,omitempty"`
}

// labWatchCmd opens a new TLS connection to url every interval for a while
// and reports the longest time without a successful answer: the client's
// view of an outage.
func (a *app) labWatchCmd() *cobra.Command {
	var url, caPath string
	var every, duration time.Duration
	cmd := &cobra.Command{
		Use:    "watch",
		Short:  "Probe an HTTPS URL with a new connection every interval and report outages",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pool, err := loadCertPool(caPath)
			if err != nil {
				return err
			}
			client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true,
			}}
			var res watchResult
			start := time.Now()
			lastOK := start
			for tick := time.NewTicker(every); time.Since(start) < duration; <-tick.C {
				t0 := time.Now()
				resp, err := client.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				res.Requests++
				if time.Since(t0) > time.Second {
					res.Slow++
				}
				if err != nil {
					res.Failed++
					if len(res.Errors) < 5 {
						res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", time.Since(start).Round(time.Millisecond), err))
					}
					continue
				}
				now := time.Now()
				res.MaxGap = max(res.MaxGap, now.Sub(lastOK))
				lastOK = now
			}
			res.MaxGap = max(res.MaxGap, time.Since(lastOK))
			return a.print(res, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%d requests, %d failed, %d slow, longest gap %s\n", res.Requests, res.Failed, res.Slow, res.MaxGap.Round(time.Millisecond))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "URL")
	cmd.Flags().StringVar(&caPath, "ca", "", "CA bundle")
	cmd.Flags().DurationVar(&every, "every", 10*time.Millisecond, "interval between new connections")
	cmd.Flags().DurationVar(&duration, "for", 5*time.Second, "how long to watch")
	return cmd
}

// labRestartCmd starts a stopped lab process again (chaos steps, tests).
func (a *app) labRestartCmd(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:    "restart HOST PROCESS",
		Short:  "Start a stopped process of the lab again (agent or backend)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := lab.LoadState(*dir)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			p, err := st.Restart(args[0], args[1])
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return a.print(p, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "lab: %s: restarted %s (pid %d)\n", p.Host, p.Name, p.PID)
				return err
			})
		},
	}
}

// labAddHostCmd adds an empty host to a running lab, for a node to join.
func (a *app) labAddHostCmd(dir *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:    "add-host NAME ADDRESS",
		Short:  "Add a host (network namespace) to the running lab",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := lab.LoadState(*dir)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			addr, err := netip.ParseAddr(args[1])
			if err != nil {
				return usageError{err}
			}
			h, err := st.AddHost(args[0], "control-plane", addr)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return a.print(h, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "lab: host %s (%s) added as namespace %s\n", h.Name, h.Address, h.NS)
				return err
			})
		},
	}
	return cmd
}

// labStartCmd starts the lab's processes of a host that joined.
func (a *app) labStartCmd(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:    "start HOST",
		Short:  "Start the lab processes (backend, agent) of a host that joined",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := lab.LoadState(*dir)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			h, ok := st.Host(args[0])
			if !ok {
				return usageError{fmt.Errorf("no host %s", args[0])}
			}
			c, err := a.loadConfig(st.ClusterFile)
			if err != nil {
				return err
			}
			var started []lab.Proc
			specs, err := labProcs(st, c, h)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			for _, p := range specs {
				pr, err := st.Run(h.Name, p)
				if err != nil {
					return &ExitError{Code: ExitFailure, Err: err}
				}
				started = append(started, pr)
			}
			return a.print(started, func(w io.Writer) error {
				for _, p := range started {
					fmt.Fprintf(w, "lab: %s: started %s (pid %d)\n", p.Host, p.Name, p.PID)
				}
				return nil
			})
		},
	}
}

// labKubectlCmd runs kubectl in the client host, through the VIP, as the
// cluster admin.
func (a *app) labKubectlCmd(dir *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kubectl ARGS...",
		Short: "Run kubectl in the lab's client host against the VIP (admin.conf)",
		Example: `  haplane lab kubectl get --raw /readyz
  haplane lab kubectl get leases -n kube-system
  haplane lab kubectl -- --help`,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.LoadState(*dir)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			if st.Backend != lab.BackendKube {
				return &ExitError{Code: ExitFailure, Err: errors.New("lab: this lab runs the stub apiserver; kubectl needs a lab up with --backend kube")}
			}
			k := st.Kubectl("admin.conf", args...)
			k.Stdin, k.Stdout, k.Stderr = a.stdin, a.stdout, a.stderr
			if err := k.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return &ExitError{Code: ee.ExitCode()}
				}
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return nil
		},
	}
	// Everything from the first argument on is kubectl's.
	cmd.Flags().SetInterspersed(false)
	return cmd
}
