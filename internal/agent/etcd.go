package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
)

// EtcdNodeOptions describes node's etcd member from the cluster file, with
// its certificates under pkiDir (kubeadm's layout) and its data in dataDir.
func EtcdNodeOptions(c *config.Cluster, node, pkiDir, dataDir string) (etcdnode.NodeOptions, error) {
	var self config.EtcdNode
	found := false
	var peers []etcdnode.Peer
	addrs := map[string]string{}
	for _, m := range c.EtcdMembers() {
		peers = append(peers, etcdnode.Peer{Name: m.Name, PeerURL: etcdnode.PeerURLFor(m.Address, c.Etcd.PeerPort)})
		addrs[m.Name] = m.Address
		if m.Name == node {
			self, found = m, true
		}
	}
	if !found {
		return etcdnode.NodeOptions{}, fmt.Errorf("agent: %q is not an etcd member of the cluster file", node)
	}
	if dataDir == "" {
		dataDir = c.Etcd.DataDir
	}
	return etcdnode.NodeOptions{
		Member: etcdnode.Config{
			Name:            self.Name,
			DataDir:         dataDir,
			Address:         self.Address,
			ClientPort:      c.Etcd.ClientPort,
			PeerPort:        c.Etcd.PeerPort,
			ListenLocalhost: true,
			InitialCluster:  peers,
			ClusterToken:    c.Name + "-etcd",
			TLS:             etcdnode.KubeadmTLSFiles(pkiDir),
		},
		Client: etcdnode.ClientTLS{
			CertFile: filepath.Join(pkiDir, "etcd", "healthcheck-client.crt"),
			KeyFile:  filepath.Join(pkiDir, "etcd", "healthcheck-client.key"),
			CAFile:   filepath.Join(pkiDir, "etcd", "ca.crt"),
		},
		Targets: etcdnode.TargetsFor(peers, func(name string) string {
			return etcdnode.ClientURLFor(addrs[name], c.Etcd.ClientPort)
		}),
	}, nil
}

// EtcdPart runs this node's etcd member (stacked topology). Its start does
// not hold up the agent: a new cluster waits for a quorum of members, and
// the VIP and load balancer must serve meanwhile (they never depend on
// etcd). Ready turns true once the member has joined.
type EtcdPart struct {
	opts etcdnode.NodeOptions
	log  *slog.Logger

	mu     sync.Mutex // protects member
	member *etcdnode.Member
	snap   etcdnode.SnapshotSchedule // Dir empty: no scheduled snapshots

	cancel context.CancelFunc
	done   chan struct{}
}

// NewEtcdPart returns the part for opts.
func NewEtcdPart(opts etcdnode.NodeOptions, log *slog.Logger) *EtcdPart {
	return &EtcdPart{opts: opts, log: log.With("part", "etcd")}
}

// WithSnapshots makes the part take scheduled snapshots once its member
// runs: a singleton duty, done only while this member leads the etcd
// cluster.
func (p *EtcdPart) WithSnapshots(s etcdnode.SnapshotSchedule) *EtcdPart {
	p.snap = s
	return p
}

// Name implements Part.
func (p *EtcdPart) Name() string { return "etcd" }

// Start enters the cluster in the background.
func (p *EtcdPart) Start(ctx context.Context, fail func(error)) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		m, plan, err := etcdnode.Enter(runCtx, p.opts, p.log)
		if err != nil {
			if runCtx.Err() == nil {
				fail(fmt.Errorf("enter the etcd cluster (%s): %w", plan.Action, err))
			}
			return
		}
		p.mu.Lock()
		p.member = m
		p.mu.Unlock()
		if p.snap.Dir != "" {
			go func() {
				if err := m.RunSnapshots(runCtx, p.snap, p.opts.Client, p.log); err != nil {
					p.log.Error("scheduled snapshots stopped", "err", err)
				}
			}()
		}
		select {
		case <-runCtx.Done():
		case <-m.Done():
			if runCtx.Err() == nil {
				fail(errors.New("the etcd member stopped (removed from the cluster?)"))
			}
		case err := <-m.Err():
			fail(err)
		}
	}()
	return nil
}

// Stop stops the member cleanly.
func (p *EtcdPart) Stop(ctx context.Context) error {
	p.cancel()
	p.mu.Lock()
	m := p.member
	p.mu.Unlock()
	if m != nil {
		m.Stop()
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready implements Readier.
func (p *EtcdPart) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.member != nil && p.member.Ready()
}

// EtcdStatus is the etcd part of /status.
type EtcdStatus struct {
	Member string `json:"member"`
	ID     string `json:"id,omitempty"`
	Ready  bool   `json:"ready"`
	Client string `json:"clientURL"`
}

// Status implements Statuser.
func (p *EtcdPart) Status() any {
	st := EtcdStatus{Member: p.opts.Member.Name, Client: p.opts.Member.ClientURL(), Ready: p.Ready()}
	p.mu.Lock()
	if p.member != nil {
		st.ID = fmt.Sprintf("%x", p.member.ID())
	}
	p.mu.Unlock()
	return st
}
