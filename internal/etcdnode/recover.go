package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Recovery from a permanent loss of quorum.
//
// When a majority of the voting members is gone for good (disks lost,
// hosts rebuilt), the cluster can never commit again: the members left
// wait forever for a quorum that will not come back. The way out is
// etcd's force-new-cluster: one surviving member restarts with its own
// data as the only voter, and the others are added again as new members
// with empty data. Everything that member had applied is kept; anything
// the old quorum acknowledged after it is lost. Recover does exactly that
// and no more, after checks that make it safe to run by mistake: it
// refuses while a quorum could still be had, while the survivor's member
// still runs, and while another reachable member holds newer data.

// ErrQuorumReachable is wrapped by a recovery refused because the cluster
// can still reach a quorum: restarting the members that are down is the
// fix then, not dropping them.
var ErrQuorumReachable = errors.New("a quorum of the etcd members is still reachable")

// ErrNewerMember is wrapped by a recovery refused because a reachable
// member holds a higher revision than the survivor: recovering from the
// survivor would lose those revisions.
var ErrNewerMember = errors.New("another member holds newer data")

// RecoverOptions is a recovery from the survivor's data dir.
type RecoverOptions struct {
	// Member is the survivor's member config as the agent or `etcd run`
	// would start it; Member.InitialCluster is the desired member list of
	// the cluster file: every other member in it is added back as a
	// learner.
	Member Config
	// Client is the client certificate used to probe the other members.
	Client ClientTLS
	// Targets are every member of the cluster file with its client URL.
	Targets []Target
	// AcceptLoss proceeds although a reachable member holds a higher
	// revision than the survivor.
	AcceptLoss bool
	// ProbeTimeout bounds the probe of the other members (default 2s);
	// StartTimeout bounds the forced start of the survivor (default 1m).
	ProbeTimeout time.Duration
	StartTimeout time.Duration
}

// RecoverPlan says what a recovery keeps and what it drops.
type RecoverPlan struct {
	// Survivor is the member whose data becomes the cluster.
	Survivor string `json:"survivor"`
	DataDir  string `json:"dataDir"`
	// Revision and Keys are the survivor's. Before the recovery they are
	// read from its database file, a lower bound: etcd commits the
	// database in batches, and a member killed in between replays the
	// rest from its WAL on start. After Recover they are the member's own
	// answer once it started, exact. Every write up to Revision is kept.
	Revision int64 `json:"revision"`
	Keys     int64 `json:"keys"`
	// Exact tells which of the two Revision is.
	Exact bool `json:"exact"`
	// Voters is the number of members of the cluster file; Quorum the
	// members a quorum of them needs.
	Voters int `json:"voters"`
	Quorum int `json:"quorum"`
	// Reachable are the other members that answered, with their revision
	// (fewer than a quorum, with the survivor, or the recovery refuses).
	Reachable []RecoverPeer `json:"reachable,omitempty"`
	// Dropped are the other members of the cluster file: they leave the
	// membership with whatever data they hold and are added back as
	// learners, to start on an empty data dir.
	Dropped []string `json:"dropped"`
	// Loss says, in a sentence, what is lost.
	Loss string `json:"loss"`
	// Backup is where a copy of the survivor's data dir was kept (set by
	// Recover).
	Backup string `json:"backup,omitempty"`
}

// RecoverPeer is another member that answered during the checks.
type RecoverPeer struct {
	Name     string `json:"name"`
	Revision int64  `json:"revision"`
}

func (o *RecoverOptions) defaults() {
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 2 * time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Minute
	}
}

// PlanRecover checks that a recovery from the survivor is safe and says
// what it would keep and drop. It changes nothing.
func PlanRecover(ctx context.Context, o RecoverOptions) (RecoverPlan, error) {
	o.defaults()
	cfg := o.Member.withDefaults()
	if err := cfg.validate(); err != nil {
		return RecoverPlan{}, err
	}
	fail := func(format string, a ...any) (RecoverPlan, error) {
		return RecoverPlan{}, fmt.Errorf("etcdnode: recover from %s: "+format, append([]any{cfg.Name}, a...)...)
	}
	if !HasData(cfg.DataDir) {
		return fail("%s holds no member data; run this on the node whose member survived", cfg.DataDir)
	}
	if err := checkNotRunning(cfg.DataDir, cfg.ClientURL()); err != nil {
		return fail("%w", err)
	}
	st, err := snapshotStatus(filepath.Join(cfg.DataDir, "member", "snap", "db"))
	if err != nil {
		return fail("read %s: %w", cfg.DataDir, err)
	}
	p := RecoverPlan{Survivor: cfg.Name, DataDir: cfg.DataDir, Revision: st.Revision, Keys: int64(st.TotalKey),
		Voters: len(cfg.InitialCluster), Quorum: Quorum(len(cfg.InitialCluster))}
	for _, peer := range cfg.InitialCluster {
		if peer.Name != cfg.Name {
			p.Dropped = append(p.Dropped, peer.Name)
		}
	}
	reach, err := o.probeOthers(ctx, cfg.Name)
	if err != nil {
		return fail("%w", err)
	}
	p.Reachable = reach
	if err := judgeRecover(p, o.AcceptLoss); err != nil {
		return p, err
	}
	p.Loss = fmt.Sprintf("keeps every write in %s's data (its database is at revision %d with %d keys; its WAL may replay more); writes the old cluster acknowledged beyond what %s applied, if any, are lost; %s leave the cluster with their data and rejoin as learners when etcd starts on them on empty data dirs",
		cfg.Name, p.Revision, p.Keys, cfg.Name, listOrNone(p.Dropped))
	return p, nil
}

// judgeRecover is the pure decision: with the survivor restarted normally,
// would the old cluster have a quorum again? Then that is the fix. Does a
// reachable member hold newer data? Then that member is the better source.
func judgeRecover(p RecoverPlan, acceptLoss bool) error {
	if 1+len(p.Reachable) >= p.Quorum {
		names := make([]string, 0, len(p.Reachable))
		for _, r := range p.Reachable {
			names = append(names, r.Name)
		}
		return fmt.Errorf("etcdnode: recover from %s: %s answer%s, and with %s that is %d of %d members, a quorum: %w; start etcd on %s again instead",
			p.Survivor, listOrNone(names), map[bool]string{true: "s", false: ""}[len(names) == 1], p.Survivor, 1+len(p.Reachable), p.Voters, ErrQuorumReachable, p.Survivor)
	}
	for _, r := range p.Reachable {
		if r.Revision > p.Revision && !acceptLoss {
			return fmt.Errorf("etcdnode: recover from %s: %s answers at revision %d, newer than %s's %d: %w; recover from %s instead, or accept losing revisions %d-%d",
				p.Survivor, r.Name, r.Revision, p.Survivor, p.Revision, ErrNewerMember, r.Name, p.Revision+1, r.Revision)
		}
	}
	return nil
}

// probeOthers asks every other member of the cluster file for its status,
// each on its own endpoint, and returns those that answered.
func (o *RecoverOptions) probeOthers(ctx context.Context, self string) ([]RecoverPeer, error) {
	var eps []Target
	for _, t := range o.Targets {
		if t.Name != self {
			eps = append(eps, t)
		}
	}
	if len(eps) == 0 {
		return nil, nil
	}
	tc, err := o.Client.Config()
	if err != nil {
		return nil, err
	}
	var out []RecoverPeer
	for _, t := range eps {
		cli, err := NewClient([]string{t.Endpoint}, tc, o.ProbeTimeout)
		if err != nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, o.ProbeTimeout)
		resp, err := cli.Status(sctx, t.Endpoint)
		cancel()
		cli.Close()
		if err != nil {
			continue // down, or not serving: not part of any quorum
		}
		out = append(out, RecoverPeer{Name: t.Name, Revision: resp.Header.GetRevision()})
	}
	return out, nil
}

// Recover rebuilds a one-member cluster from the survivor's data, then
// stops the survivor again: the operator starts it as usual (the agent, or
// `etcd run`), and then each other node starts etcd on an empty data dir:
// its plan adds it back as a learner and promotes it once caught up (etcd
// admits one learner at a time; the next join waits for the promotion). A copy of the data
// dir is kept at DataDir.pre-recover-<time> first. It refuses as
// PlanRecover does, and changes nothing then.
func Recover(ctx context.Context, o RecoverOptions, now time.Time, log *slog.Logger) (RecoverPlan, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o.defaults()
	p, err := PlanRecover(ctx, o)
	if err != nil {
		return p, err
	}
	cfg := o.Member.withDefaults()
	backup := fmt.Sprintf("%s.pre-recover-%s", strings.TrimRight(cfg.DataDir, "/"), now.UTC().Format("20060102T150405Z"))
	if err := copyTree(cfg.DataDir, backup); err != nil {
		os.RemoveAll(backup)
		return p, fmt.Errorf("etcdnode: recover from %s: keep a copy of the data dir: %w", cfg.Name, err)
	}
	p.Backup = backup
	log.Info("kept a copy of the survivor's data dir", "dir", cfg.DataDir, "copy", backup)

	// Force a new cluster of one: the member rewrites its membership to
	// itself and commits on its own. It keeps the cluster ID and its own
	// member ID, so clients and the cluster file need no change.
	cfg.ClusterState = StateExisting
	cfg.ForceNewCluster = true
	m, err := New(cfg, log)
	if err != nil {
		return p, err
	}
	sctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	if err := m.Start(sctx); err != nil {
		return p, fmt.Errorf("etcdnode: recover from %s: forced start: %w (the data dir is unchanged in %s)", cfg.Name, err, backup)
	}
	defer m.Stop()
	tc, err := o.Client.Config()
	if err != nil {
		return p, err
	}
	cli, err := NewClient([]string{cfg.ClientURL()}, tc, o.ProbeTimeout)
	if err != nil {
		return p, err
	}
	defer cli.Close()
	list, err := cli.MemberList(sctx)
	if err != nil {
		return p, fmt.Errorf("etcdnode: recover from %s: member list after the forced start: %w", cfg.Name, err)
	}
	if len(list.Members) != 1 || list.Members[0].ID != m.ID() {
		return p, fmt.Errorf("etcdnode: recover from %s: after the forced start the cluster lists %d members, want only this one", cfg.Name, len(list.Members))
	}
	st, err := cli.Status(sctx, cfg.ClientURL())
	if err != nil {
		return p, fmt.Errorf("etcdnode: recover from %s: status after the forced start: %w", cfg.Name, err)
	}
	cnt, err := cli.Get(sctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly(), clientv3.WithSerializable())
	if err != nil {
		return p, fmt.Errorf("etcdnode: recover from %s: count keys after the forced start: %w", cfg.Name, err)
	}
	p.Revision, p.Keys, p.Exact = st.Header.GetRevision(), cnt.Count, true
	p.Loss = fmt.Sprintf("kept every write up to revision %d (%d keys) from %s's data; writes the old cluster acknowledged after it, if any, are lost; %s rejoin as learners when etcd starts on them on empty data dirs",
		p.Revision, p.Keys, cfg.Name, listOrNone(p.Dropped))
	log.Info("recovered a one-member etcd cluster", "member", cfg.Name, "revision", p.Revision, "keys", p.Keys)
	return p, nil
}

// copyTree copies the regular files and folders under src to dst, which
// must not exist, keeping their modes.
func copyTree(src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("%s exists", dst)
	}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		default:
			return nil // no sockets or links in a data dir
		}
	})
}

// copyFile streams one file (a database may be gigabytes) and syncs it.
func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
