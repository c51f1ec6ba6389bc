package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
	"github.com/haplane/haplane/internal/vrrp/speaker"
)

// Options are how `haplane agent` runs a node, besides the cluster file:
// which parts, where their state and APIs live, and the overrides of the
// cluster file's defaults.
type Options struct {
	// ConfigPath is the cluster file, read again on SIGHUP, at each join
	// and at each certificate check.
	ConfigPath string
	// Node is this node's name in the cluster file ("" on a worker: the
	// host name).
	Node string
	// Role is RoleControlPlane or RoleWorker.
	Role string
	// APIAddr and APISocket are the local API ("-" disables APIAddr).
	APIAddr, APISocket string
	// StateDir holds the maintenance state and, by default, APISocket.
	StateDir string
	// PKIDir, Listen, EtcdDataDir and Kubeconfig override the cluster
	// file's certificates.dir, frontend, etcd.dataDir and the worker's
	// discovery kubeconfig when set.
	PKIDir, Listen, EtcdDataDir, Kubeconfig string
	// JoinAddr serves joins and the peer port ("-" disables it).
	JoinAddr string
	// NoVIP, NoLB, NoEtcd and NoRenew leave a part to another tool.
	NoVIP, NoLB, NoEtcd, NoRenew bool
	// SnapshotDir, when set, takes scheduled etcd snapshots there.
	SnapshotDir      string
	SnapshotInterval time.Duration
	SnapshotRetain   int
	// Nice is the scheduling priority to raise the agent to (0 leaves it).
	Nice int
	// Version is served under "agent" in /status.
	Version string
	Log     *slog.Logger
	// NotifySocket is systemd's notification socket (Config.NotifySocket).
	NotifySocket string
}

// OptionError is a node the options and cluster file cannot run: the
// caller's mistake, not the host's (the CLI exits 2 on it).
type OptionError struct{ Err error }

func (e *OptionError) Error() string { return e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// The roles of Options.Role.
const (
	RoleControlPlane = "control-plane"
	RoleWorker       = "worker"
)

// RunControlPlane runs a control-plane (or external etcd) node's parts
// until ctx ends: its etcd member, the load balancer, the VIP, the join
// server, maintenance with the peers' status, and certificate renewal,
// as o and the cluster file c say. SIGHUP reloads o.ConfigPath.
func RunControlPlane(ctx context.Context, c *config.Cluster, o Options) error {
	var err error
	_, isCP := c.NodeByName(o.Node)
	isEtcd := false
	for _, m := range c.EtcdMembers() {
		isEtcd = isEtcd || m.Name == o.Node
	}
	if !isCP && !isEtcd {
		return &OptionError{fmt.Errorf("--node: %q is not a node of %s", o.Node, o.ConfigPath)}
	}
	pkiDir, sock, err := o.folders(c)
	if err != nil {
		return err
	}
	log := o.Log.With("node", o.Node)
	reg := NewRegistry()

	// Start order etcd, lb, vip; stop order the reverse, so SIGTERM first
	// hands the VIP over, then drains the load balancer, then stops etcd.
	var parts []Part
	if isEtcd && !o.NoEtcd && c.Etcd.AgentRunsMembers() {
		opts, err := EtcdNodeOptions(c, o.Node, pkiDir, o.EtcdDataDir)
		if err != nil {
			return err
		}
		part := NewEtcdPart(opts, log)
		if o.SnapshotDir != "" {
			part.WithSnapshots(etcdnode.SnapshotSchedule{Dir: o.SnapshotDir, Interval: o.SnapshotInterval, Retain: o.SnapshotRetain})
		}
		parts = append(parts, part)
	}
	if isCP && !o.NoVIP && c.VIP.BGPMode() {
		lo, err := NewLoopbackVIPPart(c)
		if err != nil {
			return err
		}
		parts = append(parts, lo) // before the load balancer: it stops after it
	}
	var lbp *LBPart
	if isCP && !o.NoLB {
		roots, err := LoadCertPool(filepath.Join(pkiDir, "ca.crt"))
		if err != nil {
			log.Warn("kube-apiserver certificates will not be verified by health checks", "err", err)
		}
		if lbp, err = NewLBPart(c, o.Node, o.Listen, roots, reg, log); err != nil {
			return err
		}
		parts = append(parts, lbp)
	}
	var vp *VIPPart
	var bp *BGPPart
	if isCP && !o.NoVIP && c.VIP.BGPMode() {
		if bp, err = NewBGPPart(c, o.Node, lbp, log); err != nil {
			return err
		}
		parts = append(parts, bp)
	} else if isCP && !o.NoVIP {
		if vp, err = NewVIPPart(c, o.Node, lbp, reg, log); err != nil {
			return err
		}
		parts = append(parts, vp)
	}
	var jp *JoinPart
	if isCP && o.JoinAddr != "-" && fileExists(filepath.Join(pkiDir, "ca.key")) {
		var closeJoin func()
		jp, closeJoin, err = NewJoinPart(c, o, pkiDir, log)
		if err != nil {
			return err
		}
		defer closeJoin()
		parts = append(parts, jp)
	} else if isCP && o.JoinAddr != "-" && fileExists(filepath.Join(pkiDir, "apiserver.crt")) {
		// No CA keys: no joins here, but the peer port still serves this
		// agent's status and maintenance to the other nodes.
		jp = &JoinPart{Addr: o.JoinAddr, PKIDir: pkiDir, Log: log}
		parts = append(parts, jp)
	}
	maint, peers, err := maintenanceFor(c, o, pkiDir, vp, bp, lbp, log)
	if err != nil {
		return err
	}
	if peers != nil {
		parts = append(parts, peers)
	}
	if jp != nil {
		jp.Maintenance = maint
	}
	if !o.NoRenew {
		cp, err := certsPart(c, o, pkiDir, reg, log)
		if err != nil {
			return err
		}
		parts = append(parts, cp)
	}
	if o.Nice != 0 {
		// Not fatal: without CAP_SYS_NICE the agent still works, only
		// more exposed to a loaded CPU.
		if err := speaker.RaisePriority(o.Nice); err != nil {
			log.Warn("could not raise scheduling priority", "nice", o.Nice, "err", err)
		}
	}
	if len(parts) == 0 {
		return &OptionError{fmt.Errorf("the --no-* flags leave nothing to run on %s", o.Node)}
	}
	ag, err := New(Config{
		Parts:        parts,
		APIAddr:      o.APIAddr,
		APISocket:    sock,
		Registry:     reg,
		Log:          log,
		Info:         map[string]string{"node": o.Node, "cluster": c.Name, "version": o.Version, "config": o.ConfigPath},
		Maintenance:  maint,
		NotifySocket: o.NotifySocket,
	})
	if err != nil {
		return err
	}
	if jp != nil {
		jp.AgentStatus = func() any { return ag.Status() }
	}

	// SIGHUP: reload the cluster file and apply what changed in place.
	OnSIGHUP(ctx, func() { reloadAgent(ctx, o, c, lbp, vp, log) })
	if err := ag.Run(ctx); err != nil {
		return err
	}
	return nil
}

// NewJoinPart serves joins: tokens in etcd (shared by every control-plane
// node), certificates signed with this node's CA keys.
func NewJoinPart(c *config.Cluster, o Options, pkiDir string, log *slog.Logger) (*JoinPart, func(), error) {
	// The same store `haplane token create` writes to.
	cli, err := JoinEtcdClient(c, pkiDir)
	if err != nil {
		return nil, nil, err
	}
	jp := &JoinPart{
		Addr:   o.JoinAddr,
		PKIDir: pkiDir,
		Log:    log,
		Server: &join.Server{
			Cluster: c.Name,
			Tokens:  &join.EtcdStore{Client: cli},
			// The cluster file is read at each join: adding the new node
			// to it is all an operator does on this side.
			Signer: &PKISigner{PKIDir: pkiDir, Plan: func() (*pki.Plan, error) {
				c, err := config.Load(o.ConfigPath)
				if err != nil {
					return nil, err
				}
				return PKIPlan(c), nil
			}},
			Renewer: &PKIRenewer{PKIDir: pkiDir, Plan: func() (*pki.Plan, error) {
				c, err := config.Load(o.ConfigPath)
				if err != nil {
					return nil, err
				}
				return PKIPlan(c), nil
			}},
			Secrets:     PKISecrets{PKIDir: pkiDir},
			ClusterFile: func() ([]byte, error) { return os.ReadFile(o.ConfigPath) },
			Log:         log.With("part", "join"),
		},
	}
	return jp, func() { cli.Close() }, nil
}

// certsPart renews this node's leaves: with its own CA keys when it has
// them, else through the join server of another control-plane node.
func certsPart(c *config.Cluster, o Options, pkiDir string, reg *prometheus.Registry, log *slog.Logger) (*CertsPart, error) {
	rank := -1
	var peers []string
	for i, n := range c.Nodes {
		if n.Name == o.Node {
			rank = i
			continue
		}
		peers = append(peers, net.JoinHostPort(n.Address, strconv.Itoa(join.DefaultPort)))
	}
	if rank < 0 { // an external etcd host: after every control-plane node
		for i, m := range c.EtcdMembers() {
			if m.Name == o.Node {
				rank = len(c.Nodes) + i
			}
		}
	}
	return NewCertsPart(CertsConfig{
		Node: o.Node, PKIDir: pkiDir, Cluster: c.Name, Rank: rank, Peers: peers,
		Interval: c.Certificates.RenewCheckInterval.Duration,
		// The cluster file is read at each check, as for joins.
		Plan: func() (*pki.Plan, error) {
			c, err := config.Load(o.ConfigPath)
			if err != nil {
				return nil, err
			}
			return PKIPlan(c), nil
		},
		Restarter:  StaticPods{ManifestDir: filepath.Join(filepath.Dir(pkiDir), "manifests"), HoldDir: filepath.Join(filepath.Dir(pkiDir), "haplane-held")},
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
func reloadAgent(ctx context.Context, o Options, started *config.Cluster, lbp *LBPart, vp *VIPPart, log *slog.Logger) {
	defer Reloading(o.NotifySocket)()
	nc, err := config.Load(o.ConfigPath)
	if err != nil {
		log.Error("reload refused: the cluster file does not validate; keeping the running configuration", "err", err)
		return
	}
	later := restartOnly(started, nc)
	apply := func(part string, err error) bool {
		switch {
		case err == nil:
			return true
		case errors.Is(err, ErrRestartNeeded):
			later = append(later, err.Error())
			return true
		default:
			log.Error("reload: "+part+" refused the new configuration; it keeps the running one", "err", err)
			return false
		}
	}
	ok := true
	if lbp != nil {
		ok = apply("load balancer", lbp.Reload(nc, o.Node)) && ok
	}
	if vp != nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok = apply("vip", vp.Reload(rctx, nc, o.Node)) && ok
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
	for _, s := range []struct {
		name string
		a, b any
	}{
		{"kubernetesVersion", running.KubernetesVersion, next.KubernetesVersion},
		{"etcd", running.Etcd, next.Etcd},
		{"networking", running.Networking, next.Networking},
		{"certificates", running.Certificates, next.Certificates},
	} {
		if !reflect.DeepEqual(s.a, s.b) {
			out = append(out, s.name)
		}
	}
	return out
}

// OnSIGHUP calls fn on every SIGHUP until ctx ends.
func OnSIGHUP(ctx context.Context, fn func()) {
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

// DefaultSocketName is the local API's socket in the state folder, where
// `haplane maintenance` looks for it (/var/lib/haplane/agent.sock).
const DefaultSocketName = "agent.sock"

// folders makes the state folder and returns the PKI folder and the local
// API's socket: the options' or, when unset, the cluster file's and the
// state folder's defaults.
func (o Options) folders(c *config.Cluster) (pkiDir, sock string, err error) {
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return "", "", fmt.Errorf("agent: state folder: %w", err)
	}
	pkiDir, sock = o.PKIDir, o.APISocket
	if pkiDir == "" {
		pkiDir = c.Certificates.Dir
	}
	if sock == "" {
		sock = filepath.Join(o.StateDir, DefaultSocketName)
	}
	return pkiDir, sock, nil
}

// APIServerCA returns the pool that verifies apiserver certificates: --ca, or the
// cluster CA when present, or nil (probes then verify nothing, and say so).
func APIServerCA(c *config.Cluster, caFile string, log *slog.Logger) (*x509.CertPool, string, error) {
	path := caFile
	if path == "" {
		path = filepath.Join(c.Certificates.Dir, "ca.crt")
		if !pathExists(path) {
			log.Warn("lb: no cluster CA found; health checks will not verify apiserver certificates", "looked_for", path)
			return nil, "", nil
		}
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("lb: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, "", fmt.Errorf("lb: %s holds no PEM certificate", path)
	}
	return pool, path, nil
}

// LoadCertPool reads a PEM bundle into a pool.
func LoadCertPool(path string) (*x509.CertPool, error) {
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
func workerPeers(c *config.Cluster, kubeconfig string, roots *x509.CertPool, log *slog.Logger) (*PeerWatcher, map[string]string, error) {
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
	return peerWatcherFor(c, "", cert, roots, log), apis, nil
}

// RunWorker runs a worker's node-local load balancer: every apiserver
// behind loadBalancer.nodeLocal.listen, with the control plane's health
// checks, its pool following the kubernetes Service's EndpointSlices.
func RunWorker(ctx context.Context, c *config.Cluster, o Options) error {
	pkiDir, sock, err := o.folders(c)
	if err != nil {
		return err
	}
	name := o.Node
	if name == "" {
		name, _ = os.Hostname()
	}
	log := o.Log.With("node", name, "role", RoleWorker)
	reg := NewRegistry()
	roots, err := LoadCertPool(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		log.Warn("kube-apiserver certificates will not be verified by health checks", "err", err)
	}
	kubeconfig := c.LoadBalancer.NodeLocal.Kubeconfig
	if o.Kubeconfig != "" {
		kubeconfig = o.Kubeconfig
	}
	listen := c.LoadBalancer.NodeLocal.Listen
	if o.Listen != "" {
		listen = o.Listen
	}
	c.LoadBalancer.NodeLocal.Listen = listen
	client := func() (kubernetes.Interface, error) {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("discovery kubeconfig: %w", err)
		}
		return kubernetes.NewForConfig(rc)
	}
	np, err := NewNodeLocalPart(c, roots, client, reg, log)
	if err != nil {
		return err
	}
	parts := []Part{np}
	if w, apis, err := workerPeers(c, kubeconfig, roots, log); err != nil {
		log.Warn("control-plane nodes in maintenance will not be left out of this load balancer's pool (their health checks still are)", "err", err)
	} else {
		np.FollowMaintenance(w, apis)
		parts = append(parts, w)
	}
	ag, err := New(Config{
		Parts:        parts,
		APIAddr:      o.APIAddr,
		APISocket:    sock,
		Registry:     reg,
		Log:          log,
		Info:         map[string]string{"node": name, "role": RoleWorker, "cluster": c.Name, "version": o.Version, "config": o.ConfigPath},
		NotifySocket: o.NotifySocket,
	})
	if err != nil {
		return err
	}
	OnSIGHUP(ctx, func() {
		defer Reloading(o.NotifySocket)()
		nc, err := config.Load(o.ConfigPath)
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
		return err
	}
	return nil
}

// maintenanceFor wires the agent's maintenance: the peers' status reader
// (with this host's apiserver-kubelet-client certificate, as status --all
// uses) and the etcd access of this node's member.
func maintenanceFor(c *config.Cluster, o Options, pkiDir string, vp *VIPPart, bp *BGPPart, lbp *LBPart, log *slog.Logger) (*Maintenance, *PeerWatcher, error) {
	apis := map[string]string{}
	for _, n := range c.Nodes {
		apis[n.Name] = net.JoinHostPort(n.Address, strconv.Itoa(c.ControlPlaneEndpoint.APIServerPort))
	}
	mc := MaintenanceConfig{Node: o.Node, StateDir: o.StateDir, VIP: vp, BGP: bp, LB: lbp, APIServers: apis, Log: log.With("part", "maintenance")}
	for _, m := range c.EtcdMembers() {
		if m.Name != o.Node {
			continue
		}
		opts, err := EtcdNodeOptions(c, o.Node, pkiDir, o.EtcdDataDir)
		if err != nil {
			return nil, nil, err
		}
		tc, err := opts.Client.Config()
		if err != nil {
			log.Warn("maintenance cannot reach etcd: entering it will be refused", "err", err)
		} else {
			mc.Etcd = &EtcdAccess{TLS: tc, Targets: opts.Targets}
		}
	}
	if _, isCP := c.NodeByName(o.Node); isCP && len(c.Nodes) > 1 {
		roots, rerr := LoadCertPool(filepath.Join(pkiDir, "ca.crt"))
		cert, cerr := tls.LoadX509KeyPair(filepath.Join(pkiDir, "apiserver-kubelet-client.crt"), filepath.Join(pkiDir, "apiserver-kubelet-client.key"))
		if err := errors.Join(rerr, cerr); err != nil {
			log.Warn("the other nodes' agents will not be read: their maintenance does not reach this load balancer", "err", err)
		} else {
			mc.Peers = peerWatcherFor(c, o.Node, cert, roots, log)
		}
	}
	m, err := NewMaintenance(mc)
	if err != nil {
		return nil, nil, err
	}
	return m, mc.Peers, nil
}

// peerWatcher reads the status of every control-plane node's agent but
// skip's over its peer port, presenting cert (of the cluster CA).
func peerWatcherFor(c *config.Cluster, skip string, cert tls.Certificate, roots *x509.CertPool, log *slog.Logger) *PeerWatcher {
	w := &PeerWatcher{Peers: map[string]string{}, Log: log.With("part", "peers"), Client: &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}}}}
	for _, n := range c.Nodes {
		if n.Name != skip {
			w.Peers[n.Name] = "https://" + net.JoinHostPort(n.Address, strconv.Itoa(join.DefaultPort)) + PeerStatusPath
		}
	}
	return w
}

// PKIPlan maps the cluster file onto the PKI plan.
func PKIPlan(c *config.Cluster) *pki.Plan {
	p := &pki.Plan{
		ClusterName:   c.Name,
		EndpointHost:  c.EndpointHost(),
		EndpointPort:  c.ControlPlaneEndpoint.Port,
		APIServerPort: c.ControlPlaneEndpoint.APIServerPort,
		ServiceSubnet: netip.MustParsePrefix(c.Networking.ServiceSubnet),
		DNSDomain:     c.Networking.DNSDomain,
		ExternalEtcd:  c.Etcd.Topology == config.TopologyExternal,
		Validity:      c.Certificates.Validity.Duration,
		CAValidity:    c.Certificates.CAValidity.Duration,
		RenewBefore:   c.Certificates.RenewBefore.Duration,
		KeyAlgorithm:  c.Certificates.KeyAlgorithm,
	}
	// The VIP and DNS name are on every apiserver certificate, as kubeadm's
	// apiServer.certSANs, so a certificate stays valid whoever holds the VIP.
	p.ExtraAPIServerSANs = append(p.ExtraAPIServerSANs, c.ControlPlaneEndpoint.VIP)
	if c.ControlPlaneEndpoint.DNSName != "" {
		p.ExtraAPIServerSANs = append(p.ExtraAPIServerSANs, c.ControlPlaneEndpoint.DNSName)
	}
	for _, n := range c.Nodes {
		p.Hosts = append(p.Hosts, pki.Host{Name: n.Name, Address: n.Addr(), Role: pki.RoleControlPlane})
	}
	if p.ExternalEtcd {
		for _, e := range c.Etcd.Nodes {
			a, _ := netip.ParseAddr(e.Address)
			p.Hosts = append(p.Hosts, pki.Host{Name: e.Name, Address: a, Role: pki.RoleEtcd})
		}
	}
	return p
}

// JoinEtcdClient connects to the cluster's etcd with the apiserver's etcd
// client certificate, for the join token store.
func JoinEtcdClient(c *config.Cluster, pkiDir string) (*clientv3.Client, error) {
	return etcdnode.APIServerClient(c, pkiDir, 3*time.Second)
}
