package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
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

// flagError is a usage error when the lab says it was asked wrongly.
func flagError(err error) error {
	if errors.As(err, new(lab.FlagError)) {
		return usageError{err}
	}
	return err
}

// withLab runs f on the running lab's state. A failing lab operation
// exits 1 like any plain error, with its message.
func withLab(dir *string, f func(cmd *cobra.Command, st *lab.State, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		st, err := lab.LoadState(*dir)
		if err != nil {
			return err
		}
		return f(cmd, st, args)
	}
}

// hidden is a lab command that lab up, lab chaos and the tests run, not
// an operator.
func hidden(use, short string, args cobra.PositionalArgs, run func(*cobra.Command, []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Hidden: true, Args: args, RunE: run}
}

// printf prints v as the output document, or the formatted text.
func (a *app) printf(v any, format string, args ...any) error {
	return a.print(v, func(w io.Writer) error { _, err := fmt.Fprintf(w, format, args...); return err })
}

// The status command reads a cluster's agents as lab status reads the lab's.
type labView = lab.View
type labHostView = lab.HostView

var clusterView, printLabStatus = lab.ClusterView, lab.WriteStatus

func (a *app) labUpCmd(dir *string) *cobra.Command {
	var o lab.Options
	var backend, k8sVersion string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create the lab and wait until the API answers through the VIP",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.ResolveBackend(cmd.Context(), backend, k8sVersion, cmd.Flags().Changed("separate-etcd"), a.stderr); err != nil {
				return flagError(err)
			}
			o.Dir, o.Out = *dir, a.stderr
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
	f.StringVar(&o.VIPMode, "vip-mode", lab.VIPModeVRRP, "how the VIP is held: vrrp, or bgp (every node announces it to a BIRD router host, the client behind it)")
	f.StringVar(&o.Runtime, "runtime", lab.RuntimeProcess, "how control-plane hosts run Kubernetes: process (the lab starts kube-apiserver, controller-manager and scheduler) or kubelet (containerd and kubelet on every host and a worker, kubeadm init and join as docs/deploy.md says)")
	f.StringVar(&o.ModuleDir, "module-dir", ".", "haplane's source folder (--runtime kubelet builds its pause and workload images from it)")
	f.BoolVar(&o.SeparateEtcd, "separate-etcd", false, "run each etcd member as its own process (as kubelet runs kubeadm's etcd), not inside the agent (default with --backend kube)")
	return cmd
}

func (a *app) labDownCmd(dir *string) *cobra.Command {
	return &cobra.Command{Use: "down", Short: "Stop every process and remove every namespace and file of the lab (idempotent)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			prefix, err := lab.DownDir(*dir)
			if err != nil {
				return err
			}
			return a.printf(map[string]string{"down": *dir}, "lab: down (%s removed, namespaces %s-* deleted)\n", *dir, prefix)
		}}
}

func (a *app) labStatusCmd(dir *string) *cobra.Command {
	return &cobra.Command{Use: "status", Short: "Show every host of the lab: agent, VRRP state, who holds the VIP, backends, etcd", Args: cobra.NoArgs,
		RunE: withLab(dir, func(_ *cobra.Command, st *lab.State, _ []string) error {
			v := st.Status()
			return a.print(v, func(w io.Writer) error { return lab.WriteStatus(w, v) })
		})}
}

// labBackendCmd runs the stub API server of a lab host.
func (a *app) labBackendCmd() *cobra.Command {
	var cfgPath, node, pkiDir string
	cmd := hidden("backend", "Run the built-in stub kube-apiserver of a node (used by lab up)", cobra.NoArgs, func(cmd *cobra.Command, _ []string) error {
		c, err := a.loadConfig(cfgPath)
		if err != nil {
			return err
		}
		return flagError(lab.ServeStub(cmd.Context(), c, node, pkiDir, a.logger()))
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
	cmd.Flags().StringVar(&url, "url", "", "URL")
	cmd.Flags().StringVar(&caPath, "ca", "", "CA bundle")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait")
	return cmd
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
		return a.printf(res, "%s\n", res)
	})
	cmd.Flags().StringVar(&url, "url", "", "URL")
	cmd.Flags().StringVar(&caPath, "ca", "", "CA bundle")
	cmd.Flags().DurationVar(&every, "every", 10*time.Millisecond, "interval between new connections")
	cmd.Flags().DurationVar(&duration, "for", 5*time.Second, "how long to watch")
	return cmd
}

// labRestartCmd starts a stopped lab process again (chaos steps, tests).
func (a *app) labRestartCmd(dir *string) *cobra.Command {
	return hidden("restart HOST PROCESS", "Start a stopped process of the lab again (agent or backend)", cobra.ExactArgs(2), withLab(dir, func(_ *cobra.Command, st *lab.State, args []string) error {
		p, err := st.Restart(args[0], args[1])
		if err != nil {
			return err
		}
		return a.printf(p, "lab: %s: restarted %s (pid %d)\n", p.Host, p.Name, p.PID)
	}))
}

// labAddHostCmd adds an empty host to a running lab, for a node to join.
func (a *app) labAddHostCmd(dir *string) *cobra.Command {
	return hidden("add-host NAME ADDRESS", "Add a host (network namespace) to the running lab", cobra.ExactArgs(2), withLab(dir, func(_ *cobra.Command, st *lab.State, args []string) error {
		h, err := st.AddControlPlane(args[0], args[1])
		if err != nil {
			return flagError(err)
		}
		return a.printf(h, "lab: host %s (%s) added as namespace %s\n", h.Name, h.Address, h.NS)
	}))
}

// labStartCmd starts the lab's processes of a host that joined.
func (a *app) labStartCmd(dir *string) *cobra.Command {
	return hidden("start HOST", "Start the lab processes (backend, agent) of a host that joined", cobra.ExactArgs(1), withLab(dir, func(_ *cobra.Command, st *lab.State, args []string) error {
		c, err := a.loadConfig(st.ClusterFile)
		if err != nil {
			return err
		}
		started, err := st.StartHost(c, args[0])
		if err != nil {
			return flagError(err)
		}
		var text strings.Builder
		for _, p := range started {
			fmt.Fprintf(&text, "lab: %s: started %s (pid %d)\n", p.Host, p.Name, p.PID)
		}
		return a.printf(started, "%s", text.String())
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
		RunE: withLab(dir, func(_ *cobra.Command, st *lab.State, args []string) error {
			code, err := st.AdminKubectl(a.stdin, a.stdout, a.stderr, args...)
			if code != 0 {
				return &ExitError{Code: code}
			}
			return err
		}),
	}
	// Everything from the first argument on is kubectl's.
	cmd.Flags().SetInterspersed(false)
	return cmd
}
