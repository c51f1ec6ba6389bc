package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/join"
)

type agentFlags struct {
	nice                                                                                    int
	config, node, apiAddr, apiSocket, stateDir, pkiDir, listen, etcdDataDir, joinAddr, role string
	kubeconfig                                                                              string
	noVIP, noLB, noEtcd, noRenew                                                            bool
	snapDir                                                                                 string
	snapEvery                                                                               time.Duration
	snapRetain                                                                              int
}

func (a *app) agentCmd() *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the per-node daemon: VIP, load balancer and health checks in one process",
		Long: `agent runs everything a control-plane node needs from haplane, in one process:
the load balancer on the VIP's frontend port with active checks of every
kube-apiserver, and the VRRP speaker holding the VIP. The VIP follows the
ability to serve: a node whose load balancer has no healthy apiserver gives
the VIP up within a second, and the VIP never depends on etcd.

SIGTERM sends a priority-0 advert, releases the VIP, drains the load balancer
and exits. SIGHUP reloads the cluster file and applies, without dropping
connections, the load balancer's backends, algorithm, timeouts, drain and
health check, and the VIP's priorities, advert interval, preemption and
peers; it logs what waits for a restart (etcd, networking, certificates, the
VIP's address, VRID, version or interface). The local API (--api-addr, --api-socket) serves
/healthz, /readyz, /metrics and /status.

The agent also renews this node's certificates and kubeconfigs that expire
within certificates.renewBefore (checked every certificates.renewCheckInterval),
with its CA keys or, without them, through another node's join server, and
restarts the static pods that read theirs at start only (--no-cert-renewal
leaves it to another tool).`,
		Example: `  haplane agent --config /etc/haplane/haplane.yaml --node cp1`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runAgent(cmd.Context(), &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.config, "config", "c", "/etc/haplane/haplane.yaml", "cluster file")
	fl.StringVar(&f.node, "node", "", "this node's name in the cluster file (required on the control plane)")
	fl.StringVar(&f.role, "role", roleControlPlane, `"control-plane" (VIP, load balancer, etcd) or "worker" (a node-local load balancer to every apiserver on loadBalancer.nodeLocal.listen)`)
	fl.StringVar(&f.apiAddr, "api-addr", agent.DefaultAPIAddr, `local API address ("-" disables it)`)
	fl.StringVar(&f.apiSocket, "api-socket", "", "local API unix socket (default STATE-DIR/agent.sock)")
	fl.StringVar(&f.stateDir, "state-dir", "/var/lib/haplane", "agent state folder")
	fl.StringVar(&f.pkiDir, "pki-dir", "", "PKI folder (default certificates.dir of the cluster file)")
	fl.StringVar(&f.listen, "listen", "", "load balancer frontend (default the VIP and controlPlaneEndpoint.port)")
	fl.IntVar(&f.nice, "nice", -10, "scheduling priority to raise the agent to, so a loaded node does not miss adverts (0 leaves it)")
	fl.BoolVar(&f.noVIP, "no-vip", false, "do not run the VRRP speaker (another tool holds the VIP)")
	fl.BoolVar(&f.noLB, "no-lb", false, "do not run the load balancer (another tool balances)")
	fl.BoolVar(&f.noEtcd, "no-etcd", false, "do not run this node's etcd member (stacked topology; kubelet or systemd runs etcd)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "worker: the discovery watch's kubeconfig (default loadBalancer.nodeLocal.kubeconfig of the cluster file)")
	fl.StringVar(&f.etcdDataDir, "etcd-data-dir", "", "etcd data folder (default etcd.dataDir of the cluster file)")
	fl.StringVar(&f.snapDir, "snapshot-dir", "", "take scheduled etcd snapshots into this folder (only the node whose member leads etcd takes them)")
	fl.DurationVar(&f.snapEvery, "snapshot-interval", time.Hour, "time between scheduled snapshots")
	fl.IntVar(&f.snapRetain, "snapshot-retain", 24, "scheduled snapshots to keep")
	fl.BoolVar(&f.noRenew, "no-cert-renewal", false, "do not renew this node's certificates (another tool does, e.g. kubeadm certs renew)")
	fl.StringVar(&f.joinAddr, "join-addr", fmt.Sprintf(":%d", join.DefaultPort), `where to serve joins of new control-plane nodes ("-" disables; needs the CA keys)`)
	return cmd
}

const (
	roleControlPlane = agent.RoleControlPlane
	roleWorker       = agent.RoleWorker
)

func (a *app) runAgent(ctx context.Context, f *agentFlags) error {
	run := agent.RunControlPlane
	switch f.role {
	case roleControlPlane:
		if err := requireFlag("node", f.node); err != nil {
			return err
		}
	case roleWorker:
		run = agent.RunWorker
	default:
		return usageError{fmt.Errorf("--role: %q is not one of %s, %s", f.role, roleControlPlane, roleWorker)}
	}
	c, err := a.loadConfig(f.config)
	if err != nil {
		return err
	}
	err = run(ctx, c, agent.Options{
		ConfigPath: f.config, Node: f.node, Role: f.role, APIAddr: f.apiAddr, APISocket: f.apiSocket, StateDir: f.stateDir,
		PKIDir: f.pkiDir, Listen: f.listen, EtcdDataDir: f.etcdDataDir, Kubeconfig: f.kubeconfig, JoinAddr: f.joinAddr,
		NoVIP: f.noVIP, NoLB: f.noLB, NoEtcd: f.noEtcd, NoRenew: f.noRenew,
		SnapshotDir: f.snapDir, SnapshotInterval: f.snapEvery, SnapshotRetain: f.snapRetain,
		Nice: f.nice, Version: version, Log: a.logger(),
		// systemd's protocol, read here so that the agent package reads
		// no environment.
		NotifySocket: os.Getenv("NOTIFY_SOCKET"),
	})
	var oe *agent.OptionError
	if errors.As(err, &oe) {
		return usageError{oe.Err}
	}
	return err
}

// loadCertPool reads a PEM bundle into a pool.
func loadCertPool(path string) (*x509.CertPool, error) { return agent.LoadCertPool(path) }
