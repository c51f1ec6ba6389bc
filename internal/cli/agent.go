package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
	"github.com/haplane/haplane/internal/vrrp/speaker"
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
	roleControlPlane = "control-plane"
	roleWorker       = "worker"
)

func (a *app) runAgent(ctx context.Context, f *agentFlags) error {
	switch f.role {
	case roleControlPlane:
	case roleWorker:
		return a.runWorkerAgent(ctx, f)
	default:
		return usageError{fmt.Errorf("--role: %q is not one of %s, %s", f.role, roleControlPlane, roleWorker)}
	}
	if err := requireFlag("node", f.node); err != nil {
		return err
	}
	c, err := a.loadConfig(f.config)
	if err != nil {
		return err
	}
	_, isCP := c.NodeByName(f.node)
	isEtcd := false
	for _, m := range c.EtcdMembers() {
		isEtcd = isEtcd || m.Name == f.node
	}
	if !isCP && !isEtcd {
		return usageError{fmt.Errorf("--node: %q is not a node of %s", f.node, f.config)}
	}
	if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
		return fmt.Errorf("agent: state folder: %w", err)
	}
	pkiDir := f.pkiDir
	if pkiDir == "" {
		pkiDir = c.Certificates.Dir
	}
	sock := f.apiSocket
	if sock == "" {
		sock = filepath.Join(f.stateDir, "agent.sock")
	}
	log := a.logger().With("node", f.node)
	reg := agent.NewRegistry()

	// Start order etcd, lb, vip; stop order the reverse, so SIGTERM first
	// hands the VIP over, then drains the load balancer, then stops etcd.
	var parts []agent.Part
	if isEtcd && !f.noEtcd {
		opts, err := agent.EtcdNodeOptions(c, f.node, pkiDir, f.etcdDataDir)
		if err != nil {
			return err
		}
		part := agent.NewEtcdPart(opts, log)
		if f.snapDir != "" {
			part.WithSnapshots(etcdnode.SnapshotSchedule{Dir: f.snapDir, Interval: f.snapEvery, Retain: f.snapRetain})
		}
		parts = append(parts, part)
	}
	var lbp *agent.LBPart
	if isCP && !f.noLB {
		roots, err := loadCertPool(filepath.Join(pkiDir, "ca.crt"))
		if err != nil {
			log.Warn("kube-apiserver certificates will not be verified by health checks", "err", err)
		}
		if lbp, err = agent.NewLBPart(c, f.node, f.listen, roots, reg, log); err != nil {
			return err
		}
		parts = append(parts, lbp)
	}
	var vp *agent.VIPPart
	if isCP && !f.noVIP {
		if vp, err = agent.NewVIPPart(c, f.node, lbp, reg, log); err != nil {
			return &ExitError{Code: ExitFailure, Err: err}
		}
		parts = append(parts, vp)
	}
	var jp *agent.JoinPart
	if isCP && f.joinAddr != "-" && exists(filepath.Join(pkiDir, "ca.key")) {
		var closeJoin func()
		jp, closeJoin, err = a.joinPart(c, f, pkiDir, log)
		if err != nil {
			return err
		}
		defer closeJoin()
		parts = append(parts, jp)
	} else if isCP && f.joinAddr != "-" && exists(filepath.Join(pkiDir, "apiserver.crt")) {
		// No CA keys: no joins here, but the peer port still serves this
		// agent's status and maintenance to the other nodes.
		jp = &agent.JoinPart{Addr: f.joinAddr, PKIDir: pkiDir, Log: log}
		parts = append(parts, jp)
	}
	maint, peers, err := maintenanceFor(c, f, pkiDir, vp, lbp, log)
	if err != nil {
		return err
	}
	if peers != nil {
		parts = append(parts, peers)
	}
	if jp != nil {
		jp.Maintenance = maint
	}
	if !f.noRenew {
		cp, err := a.certsPart(c, f, pkiDir, reg, log)
		if err != nil {
			return err
		}
		parts = append(parts, cp)
	}
	if f.nice != 0 {
		// Not fatal: without CAP_SYS_NICE the agent still works, only
		// more exposed to a loaded CPU.
		if err := speaker.RaisePriority(f.nice); err != nil {
			log.Warn("could not raise scheduling priority", "nice", f.nice, "err", err)
		}
	}
	if len(parts) == 0 {
		return usageError{fmt.Errorf("the --no-* flags leave nothing to run on %s", f.node)}
	}
	ag, err := agent.New(agent.Config{
		Parts:        parts,
		APIAddr:      f.apiAddr,
		APISocket:    sock,
		Registry:     reg,
		Log:          log,
		Info:         map[string]string{"node": f.node, "cluster": c.Name, "version": version, "config": f.config},
		Maintenance:  maint,
		NotifySocket: notifySocket(),
	})
	if err != nil {
		return err
	}
	if jp != nil {
		jp.AgentStatus = func() any { return ag.Status() }
	}

	// SIGHUP: reload the cluster file and apply what changed in place.
	onSIGHUP(ctx, func() { reloadAgent(ctx, f, c, lbp, vp, log) })
	if err := ag.Run(ctx); err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	return nil
}

// joinPart serves joins: tokens in etcd (shared by every control-plane
// node), certificates signed with this node's CA keys.
func (a *app) joinPart(c *config.Cluster, f *agentFlags, pkiDir string, log *slog.Logger) (*agent.JoinPart, func(), error) {
	// The same store `haplane token create` writes to.
	cli, err := a.joinEtcdClient(c, pkiDir)
	if err != nil {
		return nil, nil, err
	}
	jp := &agent.JoinPart{
		Addr:   f.joinAddr,
		PKIDir: pkiDir,
		Log:    log,
		Server: &join.Server{
			Cluster: c.Name,
			Tokens:  &join.EtcdStore{Client: cli},
			// The cluster file is read at each join: adding the new node
			// to it is all an operator does on this side.
			Signer: &agent.PKISigner{PKIDir: pkiDir, Plan: func() (*pki.Plan, error) {
				c, err := config.Load(f.config)
				if err != nil {
					return nil, err
				}
				return pkiPlan(c), nil
			}},
			Renewer: &agent.PKIRenewer{PKIDir: pkiDir, Plan: func() (*pki.Plan, error) {
				c, err := config.Load(f.config)
				if err != nil {
					return nil, err
				}
				return pkiPlan(c), nil
			}},
			Secrets:     agent.PKISecrets{PKIDir: pkiDir},
			ClusterFile: func() ([]byte, error) { return os.ReadFile(f.config) },
			Log:         log.With("part", "join"),
		},
	}
	return jp, func() { cli.Close() }, nil
}

// certsPart renews this node's leaves: with its own CA keys when it has
// them, else through the join server of another control-plane node.
func (a *app) certsPart(c *config.Cluster, f *agentFlags, pkiDir string, reg *prometheus.Registry, log *slog.Logger) (*agent.CertsPart, error) {
	rank := -1
	var peers []string
	for i, n := range c.Nodes {
		if n.Name == f.node {
			rank = i
			continue
		}
		peers = append(peers, net.JoinHostPort(n.Address, strconv.Itoa(join.DefaultPort)))
	}
	if rank < 0 { // an external etcd host: after every control-plane node
		for i, m := range c.EtcdMembers() {
			if m.Name == f.node {
				rank = len(c.Nodes) + i
			}
		}
	}
	return agent.NewCertsPart(agent.CertsConfig{
		Node: f.node, PKIDir: pkiDir, Cluster: c.Name, Rank: rank, Peers: peers,
		Interval: c.Certificates.RenewCheckInterval.Duration,
		// The cluster file is read at each check, as for joins.
		Plan: func() (*pki.Plan, error) {
			c, err := config.Load(f.config)
			if err != nil {
				return nil, err
			}
			return pkiPlan(c), nil
		},
		Restarter:  agent.StaticPods{ManifestDir: filepath.Join(filepath.Dir(pkiDir), "manifests"), HoldDir: filepath.Join(filepath.Dir(pkiDir), "haplane-held")},
		Registerer: reg,
		Log:        log,
	})
}

// reloadAgent reads the cluster file again and applies it to the running
// parts, dropping no connection: the load balancer's backends, algorithm,
// timeouts and health check, and the VIP's priorities, interval,
// preemption and peers. started is the file the agent started with: what
// differs from it in sections no part reloads is logged on every reload
// until a restart applies it.
func reloadAgent(ctx context.Context, f *agentFlags, started *config.Cluster, lbp *agent.LBPart, vp *agent.VIPPart, log *slog.Logger) {
	defer agent.Reloading(notifySocket())()
	nc, err := config.Load(f.config)
	if err != nil {
		log.Error("reload refused: the cluster file does not validate; keeping the running configuration", "err", err)
		return
	}
	later := restartOnly(started, nc)
	apply := func(part string, err error) bool {
		switch {
		case err == nil:
			return true
		case errors.Is(err, agent.ErrRestartNeeded):
			later = append(later, err.Error())
			return true
		default:
			log.Error("reload: "+part+" refused the new configuration; it keeps the running one", "err", err)
			return false
		}
	}
	ok := true
	if lbp != nil {
		ok = apply("load balancer", lbp.Reload(nc, f.node)) && ok
	}
	if vp != nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok = apply("vip", vp.Reload(rctx, nc, f.node)) && ok
		cancel()
	}
	log.Info("cluster file reloaded", "nodes", len(nc.Nodes), "applied", ok)
	if len(later) > 0 {
		log.Warn("reload: these changes take effect when the agent restarts", "changes", later)
	}
}

// restartOnly lists the sections of the cluster file that changed from
// running to next and that no part reloads: the etcd cluster, the
// networking, the PKI and the Kubernetes version are read at start only.
func restartOnly(running, next *config.Cluster) []string {
	var out []string
	for _, f := range []struct {
		name string
		a, b any
	}{
		{"kubernetesVersion", running.KubernetesVersion, next.KubernetesVersion},
		{"etcd", running.Etcd, next.Etcd},
		{"networking", running.Networking, next.Networking},
		{"certificates", running.Certificates, next.Certificates},
	} {
		if !reflect.DeepEqual(f.a, f.b) {
			out = append(out, f.name)
		}
	}
	return out
}

// onSIGHUP calls fn on every SIGHUP until ctx ends.
func onSIGHUP(ctx context.Context, fn func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				fn()
			}
		}
	}()
}

// loadCertPool reads a PEM bundle into a pool.
func loadCertPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// workerPeers reads the control-plane agents' status over their peer
// port, as they read each other's, with the client certificate of the
// worker's kubeconfig (its kubelet's, of the cluster CA): a node in
// maintenance leaves the worker's pool before its apiserver stops. apis
// maps each node to its apiserver's host:port.
func workerPeers(c *config.Cluster, kubeconfig string, roots *x509.CertPool, log *slog.Logger) (*agent.PeerWatcher, map[string]string, error) {
	if roots == nil {
		return nil, nil, errors.New("no cluster CA to verify the control-plane agents with")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	certPEM, keyPEM := rc.TLSClientConfig.CertData, rc.TLSClientConfig.KeyData
	if len(certPEM) == 0 && rc.TLSClientConfig.CertFile != "" {
		if certPEM, err = os.ReadFile(rc.TLSClientConfig.CertFile); err != nil {
			return nil, nil, err
		}
	}
	if len(keyPEM) == 0 && rc.TLSClientConfig.KeyFile != "" {
		if keyPEM, err = os.ReadFile(rc.TLSClientConfig.KeyFile); err != nil {
			return nil, nil, err
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig %s: its client certificate: %w", kubeconfig, err)
	}
	apis := map[string]string{}
	for _, n := range c.Nodes {
		apis[n.Name] = net.JoinHostPort(n.Address, strconv.Itoa(c.ControlPlaneEndpoint.APIServerPort))
	}
	return peerWatcher(c, "", cert, roots, log), apis, nil
}

// runWorkerAgent runs a worker's node-local load balancer: every apiserver
// behind loadBalancer.nodeLocal.listen, with the control plane's health
// checks, its pool following the kubernetes Service's EndpointSlices.
func (a *app) runWorkerAgent(ctx context.Context, f *agentFlags) error {
	c, err := a.loadConfig(f.config)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
		return fmt.Errorf("agent: state folder: %w", err)
	}
	pkiDir := f.pkiDir
	if pkiDir == "" {
		pkiDir = c.Certificates.Dir
	}
	sock := f.apiSocket
	if sock == "" {
		sock = filepath.Join(f.stateDir, "agent.sock")
	}
	name := f.node
	if name == "" {
		name, _ = os.Hostname()
	}
	log := a.logger().With("node", name, "role", roleWorker)
	reg := agent.NewRegistry()
	roots, err := loadCertPool(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		log.Warn("kube-apiserver certificates will not be verified by health checks", "err", err)
	}
	kubeconfig := c.LoadBalancer.NodeLocal.Kubeconfig
	if f.kubeconfig != "" {
		kubeconfig = f.kubeconfig
	}
	listen := c.LoadBalancer.NodeLocal.Listen
	if f.listen != "" {
		listen = f.listen
	}
	c.LoadBalancer.NodeLocal.Listen = listen
	client := func() (kubernetes.Interface, error) {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("discovery kubeconfig: %w", err)
		}
		return kubernetes.NewForConfig(rc)
	}
	np, err := agent.NewNodeLocalPart(c, roots, client, reg, log)
	if err != nil {
		return err
	}
	parts := []agent.Part{np}
	if w, apis, err := workerPeers(c, kubeconfig, roots, log); err != nil {
		log.Warn("control-plane nodes in maintenance will not be left out of this load balancer's pool (their health checks still are)", "err", err)
	} else {
		np.FollowMaintenance(w, apis)
		parts = append(parts, w)
	}
	ag, err := agent.New(agent.Config{
		Parts:        parts,
		APIAddr:      f.apiAddr,
		APISocket:    sock,
		Registry:     reg,
		Log:          log,
		Info:         map[string]string{"node": name, "role": roleWorker, "cluster": c.Name, "version": version, "config": f.config},
		NotifySocket: notifySocket(),
	})
	if err != nil {
		return err
	}
	onSIGHUP(ctx, func() {
		defer agent.Reloading(notifySocket())()
		nc, err := config.Load(f.config)
		if err != nil {
			log.Error("reload refused: the cluster file does not validate; keeping the running configuration", "err", err)
			return
		}
		if err := np.Reload(nc); err != nil {
			log.Error("reload", "err", err)
			return
		}
		log.Info("cluster file reloaded")
	})
	if err := ag.Run(ctx); err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	return nil
}

// notifySocket is systemd's notification socket for a Type=notify unit:
// part of systemd's protocol, read here so that the agent package reads
// no environment.
func notifySocket() string { return os.Getenv("NOTIFY_SOCKET") }
