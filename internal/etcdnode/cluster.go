package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haplane/haplane/internal/config"
)

// APIServerClient connects to every member of the cluster file's etcd
// with kubeadm's apiserver-etcd-client certificate from pkiDir, as an
// apiserver does: the agent's join token store and the lab's stub
// apiserver use it.
func APIServerClient(c *config.Cluster, pkiDir string, timeout time.Duration) (*clientv3.Client, error) {
	tc, err := ClientTLS{
		CertFile: filepath.Join(pkiDir, "apiserver-etcd-client.crt"),
		KeyFile:  filepath.Join(pkiDir, "apiserver-etcd-client.key"),
		CAFile:   filepath.Join(pkiDir, "etcd", "ca.crt"),
	}.Config()
	if err != nil {
		return nil, err
	}
	var eps []string
	for _, m := range c.EtcdMembers() {
		eps = append(eps, ClientURLFor(m.Address, c.Etcd.ClientPort))
	}
	return NewClient(eps, tc, timeout)
}

// ClusterPeers lists the cluster file's etcd members as peers (for the
// initial cluster and restores) and as probe targets.
func ClusterPeers(c *config.Cluster) ([]Peer, []Target) {
	var peers []Peer
	var targets []Target
	for _, m := range c.EtcdMembers() {
		peers = append(peers, Peer{Name: m.Name, PeerURL: PeerURLFor(m.Address, c.Etcd.PeerPort)})
		targets = append(targets, Target{Name: m.Name, Endpoint: ClientURLFor(m.Address, c.Etcd.ClientPort)})
	}
	return peers, targets
}

// ClusterMember is the etcd member name of the cluster file.
func ClusterMember(c *config.Cluster, name string) (config.EtcdNode, error) {
	for _, m := range c.EtcdMembers() {
		if m.Name == name {
			return m, nil
		}
	}
	return config.EtcdNode{}, fmt.Errorf("%q is not an etcd member in the cluster file", name)
}

// KubeadmClientTLS fills what set leaves empty with the client certificate
// kubeadm leaves on a control-plane host under pkiDir: the etcd
// health-check client, else the apiserver's etcd client (a host without
// the etcd health-check client still has that one), the key beside it.
func KubeadmClientTLS(pkiDir string, set ClientTLS) ClientTLS {
	t := set
	if t.CAFile == "" {
		t.CAFile = filepath.Join(pkiDir, "etcd", "ca.crt")
	}
	if t.CertFile == "" {
		t.CertFile = filepath.Join(pkiDir, "etcd", "healthcheck-client.crt")
		if _, err := os.Stat(t.CertFile); err != nil {
			t.CertFile = filepath.Join(pkiDir, "apiserver-etcd-client.crt")
		}
	}
	if t.KeyFile == "" {
		t.KeyFile = t.CertFile[:len(t.CertFile)-len(filepath.Ext(t.CertFile))] + ".key"
	}
	return t
}

// Access is how an operator's command reaches the cluster's members.
type Access struct {
	TLS     ClientTLS
	Targets []Target
	// Timeout bounds one probe of a member; a client dials within twice
	// that.
	Timeout time.Duration
	Log     *slog.Logger
}

// ProbeCluster probes every target once; quota is the backend quota shown
// for members that do not report theirs.
func ProbeCluster(ctx context.Context, a Access, quota int64) (Report, error) {
	tc, err := a.TLS.Config()
	if err != nil {
		return Report{}, err
	}
	p := NewProber(tc, a.Timeout, quota)
	defer p.Close()
	return p.Probe(ctx, a.Targets), nil
}

// OpenOps connects the membership and maintenance operations to every
// target; close releases the client and the prober.
func OpenOps(a Access) (ops *Ops, close func(), err error) {
	tc, err := a.TLS.Config()
	if err != nil {
		return nil, nil, err
	}
	var eps []string
	for _, t := range a.Targets {
		eps = append(eps, t.Endpoint)
	}
	cli, err := NewClient(eps, tc, a.Timeout*2)
	if err != nil {
		return nil, nil, err
	}
	p := NewProber(tc, a.Timeout, 0)
	return &Ops{Client: cli, Prober: p, Targets: a.Targets, Log: a.Log}, func() { p.Close(); cli.Close() }, nil
}

// SnapshotCluster saves a verified snapshot into path from endpoint, or,
// when endpoint is "", from the first healthy voting member (a learner's
// copy may lag). It returns the endpoint it read from.
func SnapshotCluster(ctx context.Context, a Access, endpoint, path string) (SnapshotInfo, string, error) {
	if endpoint == "" {
		rep, err := ProbeCluster(ctx, a, 0)
		if err != nil {
			return SnapshotInfo{}, "", err
		}
		for _, m := range rep.Members {
			if m.Healthy && !m.Learner {
				endpoint = m.Endpoint
				break
			}
		}
		if endpoint == "" {
			return SnapshotInfo{}, "", errors.New("etcd snapshot: no healthy voting member")
		}
	}
	tc, err := a.TLS.Config()
	if err != nil {
		return SnapshotInfo{}, endpoint, err
	}
	cli, err := NewClient([]string{endpoint}, tc, 2*a.Timeout)
	if err != nil {
		return SnapshotInfo{}, endpoint, err
	}
	defer cli.Close()
	info, err := SaveSnapshot(ctx, cli, path)
	return info, endpoint, err
}

// RestoreClusterOptions restores one member of the cluster file.
type RestoreClusterOptions struct {
	Snapshot, Node, DataDir string
	// Token is the first member's new cluster token ("" on the first
	// member: a new one is made).
	Token        string
	RevisionBump uint64
}

// RestoreResult says what a restore of one member did.
type RestoreResult struct {
	// The fields are in the order of their JSON names: `haplane etcd
	// restore --output json` printed them from a map.
	DataDir    string `json:"dataDir"`
	MovedAside string `json:"movedAside"`
	NewToken   bool   `json:"newToken"`
	Revision   int64  `json:"revision"`
	Token      string `json:"token"`
	// Others are the members still to restore with Token.
	Others []string `json:"-"`
}

// RestoreCluster verifies the snapshot and rebuilds o.Node's data dir from
// it for a new cluster of every member of the cluster file.
func RestoreCluster(c *config.Cluster, o RestoreClusterOptions, now time.Time, log *slog.Logger) (RestoreResult, error) {
	self, err := ClusterMember(c, o.Node)
	if err != nil {
		return RestoreResult{}, err
	}
	info, err := VerifySnapshot(o.Snapshot)
	if err != nil {
		return RestoreResult{}, err
	}
	r := RestoreResult{DataDir: o.DataDir, Token: o.Token, Revision: info.Revision, NewToken: o.Token == ""}
	if r.DataDir == "" {
		r.DataDir = c.Etcd.DataDir
	}
	if r.NewToken {
		r.Token = RestoreToken(c.Name, info.SHA256)
	}
	peers, _ := ClusterPeers(c)
	r.MovedAside, err = Restore(RestoreOptions{
		Snapshot: o.Snapshot, Name: o.Node, Members: peers, DataDir: r.DataDir, Token: r.Token, RevisionBump: o.RevisionBump,
		ClientURL: ClientURLFor(self.Address, c.Etcd.ClientPort),
	}, now, log)
	if err != nil {
		return r, err
	}
	for _, p := range peers {
		if p.Name != o.Node {
			r.Others = append(r.Others, p.Name)
		}
	}
	return r, nil
}
