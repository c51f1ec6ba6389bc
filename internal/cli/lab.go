package cli

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/lab"
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

// withLab runs f on the running lab's state. A failing lab operation
// exits 1 like any plain error, with its message.
func withLab(dir *string, f func(st *lab.State, args []string) error) func(*cobra.Command, []string) error {
	return func(_ *cobra.Command, args []string) error {
		st, err := lab.LoadState(*dir)
		if err != nil {
			return err
		}
		return f(st, args)
	}
}

// hidden is a lab command that lab up, lab chaos and the tests run, not
// an operator.
func hidden(use, short string, args cobra.PositionalArgs, run func(*cobra.Command, []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Hidden: true, Args: args, RunE: run}
}

// printLine prints v as the output document, or the lines as the text.
func (a *app) printLine(v any, lines ...string) error {
	return a.print(v, func(w io.Writer) error {
		for _, l := range lines {
			if _, err := fmt.Fprintln(w, l); err != nil {
				return err
			}
		}
		return nil
	})
}

// The status command reads a cluster's agents as lab status reads the
// lab's: one view, one printer, now the lab's.
type (
	labView     = lab.View
	labHostView = lab.HostView
)

var (
	clusterView    = lab.ClusterView
	printLabStatus = lab.WriteStatus
)

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
					return err
				}
				if o.K8sBin != "" {
					if err := lab.CheckK8sBin(o.K8sBin, ""); err != nil {
						return usageError{fmt.Errorf("--k8s-bin: %w", err)}
					}
				} else {
					bin, err := lab.K8sBinaries(cmd.Context(), k8sVersion, a.stderr)
					if err != nil {
						return err
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
			st, view, err := lab.UpReady(o, pkiPlan, wait)
			if err != nil {
				return err
			}
			return a.print(view, func(w io.Writer) error { return lab.WriteUp(w, st, view) })
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

func (a *app) labDownCmd(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop every process and remove every namespace and file of the lab (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			prefix, err := lab.DownDir(*dir)
			if err != nil {
				return err
			}
			return a.printLine(map[string]string{"down": *dir}, fmt.Sprintf("lab: down (%s removed, namespaces %s-* deleted)", *dir, prefix))
		},
	}
}

func (a *app) labStatusCmd(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every host of the lab: agent, VRRP state, who holds the VIP, backends, etcd",
		Args:  cobra.NoArgs,
		RunE: withLab(dir, func(st *lab.State, _ []string) error {
			v := st.Status()
			return a.print(v, func(w io.Writer) error { return lab.WriteStatus(w, v) })
		}),
	}
}

// labBackendCmd runs the stub API server of a lab host.
func (a *app) labBackendCmd() *cobra.Command {
	var cfgPath, node, pkiDir string
	cmd := hidden("backend", "Run the built-in stub kube-apiserver of a node (used by lab up)", cobra.NoArgs, func(cmd *cobra.Command, _ []string) error {
		c, err := a.loadConfig(cfgPath)
		if err != nil {
			return err
		}
		n, ok := c.NodeByName(node)
		if !ok {
			return usageError{fmt.Errorf("--node %q is not a control-plane node", node)}
		}
		return lab.ServeStub(cmd.Context(), c, n, pkiDir, a.logger())
	})
	cmd.Flags().StringVar(&cfgPath, "config", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&node, "node", "", "node name")
	cmd.Flags().StringVar(&pkiDir, "pki-dir", "", "the node's PKI folder")
	return cmd
}

// labProbeCmd waits until url answers 200, verifying against ca.
func (a *app) labProbeCmd() *cobra.Command {
	var url, caPath string
	var timeout time.Duration
	cmd := hidden("probe", "Wait until an HTTPS URL answers 200 (used by lab up)", cobra.NoArgs, func(cmd *cobra.Command, _ []string) error {
		body, err := lab.WaitURL(cmd.Context(), url, caPath, timeout)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s: %s\n", url, body)
		return err
	})
	urlFlags(cmd, &url, &caPath)
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait")
	return cmd
}

// urlFlags are the URL and CA bundle of probe and watch.
func urlFlags(cmd *cobra.Command, url, caPath *string) {
	cmd.Flags().StringVar(url, "url", "", "URL")
	cmd.Flags().StringVar(caPath, "ca", "", "CA bundle")
}

// labWatchCmd reports the client's view of an outage of url.
func (a *app) labWatchCmd() *cobra.Command {
	var url, caPath string
	var every, duration time.Duration
	cmd := hidden("watch", "Probe an HTTPS URL with a new connection every interval and report outages", cobra.NoArgs, func(*cobra.Command, []string) error {
		res, err := lab.Watch(url, caPath, every, duration)
		if err != nil {
			return err
		}
		return a.printLine(res, res.String())
	})
	urlFlags(cmd, &url, &caPath)
	cmd.Flags().DurationVar(&every, "every", 10*time.Millisecond, "interval between new connections")
	cmd.Flags().DurationVar(&duration, "for", 5*time.Second, "how long to watch")
	return cmd
}

// labRestartCmd starts a stopped lab process again (chaos steps, tests).
func (a *app) labRestartCmd(dir *string) *cobra.Command {
	return hidden("restart HOST PROCESS", "Start a stopped process of the lab again (agent or backend)", cobra.ExactArgs(2), withLab(dir, func(st *lab.State, args []string) error {
		p, err := st.Restart(args[0], args[1])
		if err != nil {
			return err
		}
		return a.printLine(p, fmt.Sprintf("lab: %s: restarted %s (pid %d)", p.Host, p.Name, p.PID))
	}))
}

// labAddHostCmd adds an empty host to a running lab, for a node to join.
func (a *app) labAddHostCmd(dir *string) *cobra.Command {
	return hidden("add-host NAME ADDRESS", "Add a host (network namespace) to the running lab", cobra.ExactArgs(2), withLab(dir, func(st *lab.State, args []string) error {
		addr, err := netip.ParseAddr(args[1])
		if err != nil {
			return usageError{err}
		}
		h, err := st.AddHost(args[0], "control-plane", addr)
		if err != nil {
			return err
		}
		return a.printLine(h, fmt.Sprintf("lab: host %s (%s) added as namespace %s", h.Name, h.Address, h.NS))
	}))
}

// labStartCmd starts the lab's processes of a host that joined.
func (a *app) labStartCmd(dir *string) *cobra.Command {
	return hidden("start HOST", "Start the lab processes (backend, agent) of a host that joined", cobra.ExactArgs(1), withLab(dir, func(st *lab.State, args []string) error {
		h, ok := st.Host(args[0])
		if !ok {
			return usageError{fmt.Errorf("no host %s", args[0])}
		}
		c, err := a.loadConfig(st.ClusterFile)
		if err != nil {
			return err
		}
		started, err := st.StartHost(c, h)
		if err != nil {
			return err
		}
		var lines []string
		for _, p := range started {
			lines = append(lines, fmt.Sprintf("lab: %s: started %s (pid %d)", p.Host, p.Name, p.PID))
		}
		return a.printLine(started, lines...)
	}))
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
		RunE: withLab(dir, func(st *lab.State, args []string) error {
			if st.Backend != lab.BackendKube {
				return errors.New("lab: this lab runs the stub apiserver; kubectl needs a lab up with --backend kube")
			}
			k := st.Kubectl("admin.conf", args...)
			k.Stdin, k.Stdout, k.Stderr = a.stdin, a.stdout, a.stderr
			err := k.Run()
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				return &ExitError{Code: ee.ExitCode()}
			}
			return err
		}),
	}
	// Everything from the first argument on is kubectl's.
	cmd.Flags().SetInterspersed(false)
	return cmd
}
