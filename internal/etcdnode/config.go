package etcdnode

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Defaults applied by Config.withDefaults. They follow kubeadm's etcd static
// pod where kubeadm sets a flag, and etcd's own defaults otherwise.
const (
	DefaultClientPort = 2379
	DefaultPeerPort   = 2380
	// DefaultSnapshotCount is kubeadm's --snapshot-count.
	DefaultSnapshotCount = 10000
	// DefaultMetricsURL is kubeadm's --listen-metrics-urls: plain HTTP on
	// loopback only, serving /metrics, /livez, /readyz and /health.
	DefaultMetricsURL = "http://127.0.0.1:2381"
	// DefaultQuotaBackendBytes is etcd's default backend quota (2 GiB);
	// kubeadm leaves it unset.
	DefaultQuotaBackendBytes = 2 << 30
	// DefaultHeartbeat and DefaultElectionTimeout are etcd's defaults.
	DefaultHeartbeat       = 100 * time.Millisecond
	DefaultElectionTimeout = 1000 * time.Millisecond
	// DefaultLogLevel keeps etcd's own zap logs to warnings and errors;
	// haplane logs what it does itself.
	DefaultLogLevel = "warn"
	// WatchProgressNotifyInterval is kubeadm's
	// --watch-progress-notify-interval.
	WatchProgressNotifyInterval = 5 * time.Second
	// FeatureGates is kubeadm's --feature-gates.
	FeatureGates = "InitialCorruptCheck=true"
)

// Cluster states, as etcd's --initial-cluster-state.
const (
	StateNew      = "new"
	StateExisting = "existing"
)

// Peer is one member of the initial cluster: its name and peer URL.
type Peer struct {
	Name    string `json:"name"`
	PeerURL string `json:"peerURL"`
}

// TLSFiles names the PEM files of one member, laid out as kubeadm does under
// <pki>/etcd: server.crt|key for the client port, peer.crt|key for the peer
// port, and ca.crt trusted on both.
type TLSFiles struct {
	CertFile     string `json:"certFile"`
	KeyFile      string `json:"keyFile"`
	PeerCertFile string `json:"peerCertFile"`
	PeerKeyFile  string `json:"peerKeyFile"`
	CAFile       string `json:"caFile"`
}

// KubeadmTLSFiles returns the kubeadm layout under a PKI directory.
func KubeadmTLSFiles(pkiDir string) TLSFiles {
	d := filepath.Join(pkiDir, "etcd")
	return TLSFiles{
		CertFile:     filepath.Join(d, "server.crt"),
		KeyFile:      filepath.Join(d, "server.key"),
		PeerCertFile: filepath.Join(d, "peer.crt"),
		PeerKeyFile:  filepath.Join(d, "peer.key"),
		CAFile:       filepath.Join(d, "ca.crt"),
	}
}

// Config is one etcd member. Zero fields take the defaults documented on
// each; Name, DataDir, Address, TLS and InitialCluster are required.
type Config struct {
	// Name is the member name, the node's name in the cluster file.
	Name string `json:"name"`
	// DataDir holds the member's WAL and database.
	DataDir string `json:"dataDir"`
	// Address is the node's IP address; the client and peer URLs are
	// https://Address:ClientPort and https://Address:PeerPort.
	Address string `json:"address"`
	// ClientPort (default 2379) and PeerPort (default 2380).
	ClientPort int `json:"clientPort,omitempty"`
	PeerPort   int `json:"peerPort,omitempty"`
	// ListenLocalhost adds https://127.0.0.1:ClientPort as a client
	// listener, as kubeadm does, so local clients need not know the node
	// address. Ignored when Address is itself loopback.
	ListenLocalhost bool `json:"listenLocalhost,omitempty"`

	// InitialCluster lists every member the cluster starts (or, with
	// ClusterState existing, currently has) including this one.
	InitialCluster []Peer `json:"initialCluster"`
	// ClusterState is "new" (default) to bootstrap or "existing" to join.
	ClusterState string `json:"clusterState,omitempty"`
	// ClusterToken separates clusters built from the same addresses
	// (default "etcd-cluster", etcd's own default).
	ClusterToken string `json:"clusterToken,omitempty"`

	TLS TLSFiles `json:"tls"`

	// SnapshotCount is raft entries between snapshots (default 10000).
	SnapshotCount uint64 `json:"snapshotCount,omitempty"`
	// MetricsURL is the plain-HTTP metrics and health listener (default
	// http://127.0.0.1:2381); "none" disables it.
	MetricsURL string `json:"metricsURL,omitempty"`
	// QuotaBackendBytes is the database size that raises the NOSPACE
	// alarm (default 2 GiB).
	QuotaBackendBytes int64 `json:"quotaBackendBytes,omitempty"`
	// Heartbeat (default 100ms) and ElectionTimeout (default 1s); the
	// election timeout must be at least 5 heartbeats.
	Heartbeat       time.Duration `json:"heartbeat,omitempty"`
	ElectionTimeout time.Duration `json:"electionTimeout,omitempty"`
	// LogLevel is etcd's own log level (default warn).
	LogLevel string `json:"logLevel,omitempty"`
	// ForceNewCluster starts the member as the only voter of its cluster,
	// whatever its data says of the others (etcd's --force-new-cluster).
	// Only Recover sets it, for one start.
	ForceNewCluster bool `json:"-"`
}

// ClientURL is the member's advertised client URL.
func (c Config) ClientURL() string {
	return hostURL("https", c.Address, c.port(c.ClientPort, DefaultClientPort))
}

// PeerURL is the member's advertised peer URL.
func (c Config) PeerURL() string {
	return hostURL("https", c.Address, c.port(c.PeerPort, DefaultPeerPort))
}

func (c Config) port(p, def int) int {
	if p == 0 {
		return def
	}
	return p
}

// ClientURLFor and PeerURLFor build a member's URLs from an address and port.
func ClientURLFor(addr string, port int) string { return hostURL("https", addr, port) }

// PeerURLFor is the peer URL of a member at addr.
func PeerURLFor(addr string, port int) string { return hostURL("https", addr, port) }

func hostURL(scheme, host string, port int) string {
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.ClientPort == 0 {
		c.ClientPort = DefaultClientPort
	}
	if c.PeerPort == 0 {
		c.PeerPort = DefaultPeerPort
	}
	if c.ClusterState == "" {
		c.ClusterState = StateNew
	}
	if c.ClusterToken == "" {
		c.ClusterToken = "etcd-cluster"
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = DefaultSnapshotCount
	}
	if c.MetricsURL == "" {
		c.MetricsURL = DefaultMetricsURL
	}
	if c.QuotaBackendBytes == 0 {
		c.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	return c
}

// memberName is what etcd and kubeadm accept as a member (node) name.
var memberName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// validate reports every problem of a defaulted config at once.
func (c Config) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !memberName.MatchString(c.Name) {
		add("name %q: want a DNS-1123 name (lower case letters, digits, '-', '.')", c.Name)
	}
	if c.DataDir == "" {
		add("dataDir is required")
	}
	if _, err := netip.ParseAddr(c.Address); err != nil {
		add("address %q: not an IP address", c.Address)
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"clientPort", c.ClientPort}, {"peerPort", c.PeerPort}} {
		if p.v < 1 || p.v > 65535 {
			add("%s %d: want 1..65535", p.name, p.v)
		}
	}
	if c.ClientPort == c.PeerPort {
		add("clientPort and peerPort are both %d", c.ClientPort)
	}
	switch c.ClusterState {
	case StateNew, StateExisting:
	default:
		add("clusterState %q: want %q or %q", c.ClusterState, StateNew, StateExisting)
	}
	self := false
	seen := map[string]bool{}
	for i, p := range c.InitialCluster {
		if !memberName.MatchString(p.Name) {
			add("initialCluster[%d].name %q: want a DNS-1123 name", i, p.Name)
		}
		if err := checkURL(p.PeerURL, "https"); err != nil {
			add("initialCluster[%d].peerURL: %v", i, err)
		}
		if seen[p.Name] || seen[p.PeerURL] {
			add("initialCluster[%d]: name %q or peer URL %q listed twice", i, p.Name, p.PeerURL)
		}
		seen[p.Name], seen[p.PeerURL] = true, true
		if p.Name == c.Name {
			self = true
			if c.Address != "" && p.PeerURL != c.PeerURL() {
				add("initialCluster[%d].peerURL %q: this member advertises %q", i, p.PeerURL, c.PeerURL())
			}
		}
	}
	if !self {
		add("initialCluster does not list this member %q", c.Name)
	}
	files := map[string]string{
		"tls.certFile": c.TLS.CertFile, "tls.keyFile": c.TLS.KeyFile,
		"tls.peerCertFile": c.TLS.PeerCertFile, "tls.peerKeyFile": c.TLS.PeerKeyFile,
		"tls.caFile": c.TLS.CAFile,
	}
	names := make([]string, 0, len(files))
	for k := range files {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if files[k] == "" {
			add("%s is required (client and peer certificate auth are always on)", k)
		} else if _, err := os.Stat(files[k]); err != nil {
			add("%s: %v", k, err)
		}
	}
	if c.MetricsURL != "none" {
		if err := checkURL(c.MetricsURL, "http"); err != nil {
			add("metricsURL: %v", err)
		}
	}
	if c.QuotaBackendBytes < 0 {
		add("quotaBackendBytes %d: must not be negative", c.QuotaBackendBytes)
	}
	if c.Heartbeat <= 0 || c.ElectionTimeout < 5*c.Heartbeat {
		add("electionTimeout %v must be at least 5 heartbeats (%v)", c.ElectionTimeout, c.Heartbeat)
	}
	if c.Heartbeat%time.Millisecond != 0 || c.ElectionTimeout%time.Millisecond != 0 {
		add("heartbeat and electionTimeout must be whole milliseconds")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error", "panic", "fatal":
	default:
		add("logLevel %q: want debug, info, warn or error", c.LogLevel)
	}
	if len(errs) > 0 {
		return fmt.Errorf("etcdnode: invalid member config: %w", errors.Join(errs...))
	}
	return nil
}

func checkURL(s, scheme string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if u.Scheme != scheme || u.Port() == "" || u.Path != "" && u.Path != "/" {
		return fmt.Errorf("%q: want %s://host:port", s, scheme)
	}
	if _, err := netip.ParseAddr(u.Hostname()); err != nil {
		return fmt.Errorf("%q: host must be an IP address", s)
	}
	return nil
}

// InitialClusterString renders peers as etcd's --initial-cluster flag.
func InitialClusterString(peers []Peer) string {
	parts := make([]string, 0, len(peers))
	for _, p := range peers {
		parts = append(parts, p.Name+"="+p.PeerURL)
	}
	return strings.Join(parts, ",")
}
