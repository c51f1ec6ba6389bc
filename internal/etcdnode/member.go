package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/pkg/v3/featuregate"
	"go.etcd.io/etcd/server/v3/embed"
)

// Member is one embedded etcd member. Start it once; Stop is safe to call
// at any time and more than once.
type Member struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex // protects e
	e  *embed.Etcd
}

// New checks cfg (after applying defaults) and returns a stopped member.
func New(cfg Config, log *slog.Logger) (*Member, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Member{cfg: cfg, log: log.With("member", cfg.Name)}, nil
}

// Config returns the defaulted configuration.
func (m *Member) Config() Config { return m.cfg }

// HasData reports whether dir already holds a member's WAL: such a member
// restarts from its own state and ignores the initial cluster.
func HasData(dir string) bool {
	ents, err := os.ReadDir(filepath.Join(dir, "member", "wal"))
	return err == nil && len(ents) > 0
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(fmt.Sprintf("etcdnode: URL %q passed validation but does not parse: %v", s, err))
	}
	return *u
}

// embedConfig translates the member config into etcd's, with kubeadm's flags.
func (m *Member) embedConfig() *embed.Config {
	c := m.cfg
	ec := embed.NewConfig()
	ec.Name = c.Name
	ec.Dir = c.DataDir
	ec.SnapshotCount = c.SnapshotCount
	ec.TickMs = uint(c.Heartbeat.Milliseconds())
	ec.ElectionMs = uint(c.ElectionTimeout.Milliseconds())
	ec.QuotaBackendBytes = c.QuotaBackendBytes
	ec.ListenPeerUrls = []url.URL{mustURL(c.PeerURL())}
	ec.AdvertisePeerUrls = []url.URL{mustURL(c.PeerURL())}
	ec.ListenClientUrls = []url.URL{mustURL(c.ClientURL())}
	if a, _ := netip.ParseAddr(c.Address); c.ListenLocalhost && !a.IsLoopback() {
		ec.ListenClientUrls = append(ec.ListenClientUrls, mustURL(ClientURLFor("127.0.0.1", c.ClientPort)))
	}
	ec.AdvertiseClientUrls = []url.URL{mustURL(c.ClientURL())}
	ec.ClientTLSInfo = transport.TLSInfo{
		CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile,
		TrustedCAFile: c.TLS.CAFile, ClientCertAuth: true,
	}
	ec.PeerTLSInfo = transport.TLSInfo{
		CertFile: c.TLS.PeerCertFile, KeyFile: c.TLS.PeerKeyFile,
		TrustedCAFile: c.TLS.CAFile, ClientCertAuth: true,
	}
	ec.ClusterState = c.ClusterState
	ec.InitialCluster = InitialClusterString(c.InitialCluster)
	ec.InitialClusterToken = c.ClusterToken
	ec.ForceNewCluster = c.ForceNewCluster
	ec.StrictReconfigCheck = true
	ec.PreVote = true
	// kubeadm's --watch-progress-notify-interval: the apiserver's watch
	// cache relies on progress notifications to serve consistent reads
	// from cache and to move its resource version on quiet resources.
	ec.WatchProgressNotifyInterval = WatchProgressNotifyInterval
	// kubeadm's --feature-gates=InitialCorruptCheck=true: a member whose
	// data disagrees with its peers' refuses to serve instead of joining.
	if err := ec.ServerFeatureGate.(featuregate.MutableFeatureGate).Set(FeatureGates); err != nil {
		panic(fmt.Sprintf("etcdnode: feature gates %q: %v", FeatureGates, err))
	}
	if c.MetricsURL != "none" {
		ec.ListenMetricsUrls = []url.URL{mustURL(c.MetricsURL)}
		ec.Metrics = "basic"
	}
	ec.Logger = "zap"
	ec.LogLevel = c.LogLevel
	ec.LogOutputs = []string{embed.StdErrLogOutput}
	return ec
}

// Start runs the member and returns once it has joined its cluster and
// serves clients (a new cluster needs a quorum of members started), or
// with an error when ctx ends first or etcd fails. A start that fails
// stops whatever it had started, so the ports and data dir are free again.
func (m *Member) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e != nil {
		return fmt.Errorf("etcdnode: member %s already started", m.cfg.Name)
	}
	if err := os.MkdirAll(m.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("etcdnode: create data dir: %w", err)
	}
	m.log.Info("starting etcd member", "state", m.cfg.ClusterState, "client", m.cfg.ClientURL(),
		"peer", m.cfg.PeerURL(), "data", m.cfg.DataDir, "restart", HasData(m.cfg.DataDir))
	e, err := embed.StartEtcd(m.embedConfig())
	if err != nil {
		return fmt.Errorf("etcdnode: start member %s: %w", m.cfg.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		abort(e)
		return fmt.Errorf("etcdnode: member %s failed while starting: %w", m.cfg.Name, err)
	case <-e.Server.StopNotify():
		abort(e)
		return fmt.Errorf("etcdnode: member %s stopped while starting (removed from the cluster, or a cluster ID mismatch)", m.cfg.Name)
	case <-ctx.Done():
		abort(e)
		return fmt.Errorf("etcdnode: member %s not ready: %w", m.cfg.Name, ctx.Err())
	}
	m.e = e
	m.log.Info("etcd member ready", "id", fmt.Sprintf("%x", uint64(e.Server.MemberID())))
	return nil
}

// abort closes a member that never got ready. embed's Close waits for the
// client servers, which only start once the server is ready or stopping;
// stopping the server first lets Close finish instead of hanging.
func abort(e *embed.Etcd) {
	e.Server.HardStop()
	e.Close()
}

// Stop closes the member: it stops serving, flushes and closes its data.
func (m *Member) Stop() {
	m.mu.Lock()
	e := m.e
	m.e = nil
	m.mu.Unlock()
	if e != nil {
		e.Close()
		m.log.Info("etcd member stopped")
	}
}

// Done is closed when a started member stops on its own (for example when
// it was removed from the cluster) or with Stop. Before Start it is nil.
func (m *Member) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e == nil {
		return nil
	}
	return m.e.Server.StopNotify()
}

// Err delivers a fatal error of a started member's listeners.
func (m *Member) Err() <-chan error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e == nil {
		return nil
	}
	return m.e.Err()
}

// ID is the member's raft ID, 0 before Start.
func (m *Member) ID() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e == nil {
		return 0
	}
	return uint64(m.e.Server.MemberID())
}

// Ready reports whether the member is started, knows a leader and is not
// stopping: the condition etcd's /readyz checks first.
func (m *Member) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e == nil {
		return false
	}
	select {
	case <-m.e.Server.StopNotify():
		return false
	default:
	}
	return m.e.Server.Leader() != 0
}

// ErrNotStarted is returned by operations that need a started member.
var ErrNotStarted = errors.New("etcdnode: member not started")
