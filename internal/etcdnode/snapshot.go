package etcdnode

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// SnapshotInfo describes a verified snapshot file.
type SnapshotInfo struct {
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"` // the trailer etcd appends, verified
	Revision int64  `json:"revision"`
	Keys     int    `json:"keys"`
	Version  string `json:"version,omitempty"`
}

// SaveSnapshot streams a snapshot from the member cli is connected to (give
// it one endpoint) into path. The stream ends with the SHA-256 of the
// database, which is checked, and the database is then opened and checked
// page by page (etcdutl's snapshot status). Nothing is left at path unless
// both checks pass; an existing file at path is only replaced then.
func SaveSnapshot(ctx context.Context, cli *clientv3.Client, path string) (SnapshotInfo, error) {
	part := path + ".part"
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: snapshot: %w", err)
	}
	defer os.Remove(part) // after a successful rename it no longer exists
	defer f.Close()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: snapshot: request: %w", err)
	}
	defer rc.Close()
	size, err := io.Copy(f, rc)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: snapshot: receive: %w", err)
	}
	if err := f.Sync(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: snapshot: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: snapshot: close: %w", err)
	}
	info, err := VerifySnapshot(part)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if info.Size != size {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: snapshot: wrote %d bytes, file has %d", size, info.Size)
	}
	if err := os.Rename(part, path); err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: snapshot: %w", err)
	}
	info.Path = path
	return info, nil
}

// ErrSnapshotCorrupt is wrapped by every failed snapshot verification.
var ErrSnapshotCorrupt = errors.New("snapshot is corrupt")

// VerifySnapshot checks a snapshot file: its SHA-256 trailer matches the
// database before it, and the database passes bbolt's consistency check.
func VerifySnapshot(path string) (SnapshotInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: verify snapshot: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: verify snapshot: %w", err)
	}
	size := st.Size()
	// etcd pads the database to whole 512-byte sectors and appends 32 bytes.
	if size < sha256.Size || (size-sha256.Size)%512 != 0 {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: verify snapshot %s: %d bytes is not a database plus a SHA-256 trailer: %w", path, size, ErrSnapshotCorrupt)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, f, size-sha256.Size); err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: verify snapshot: read: %w", err)
	}
	trailer := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, trailer); err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: verify snapshot: read: %w", err)
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, trailer) {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: verify snapshot %s: SHA-256 %x does not match trailer %x: %w", path, sum, trailer, ErrSnapshotCorrupt)
	}
	s, err := snapshotStatus(path)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("etcdnode: verify snapshot %s: %v: %w", path, err, ErrSnapshotCorrupt)
	}
	return SnapshotInfo{Path: path, Size: size, SHA256: hex.EncodeToString(trailer), Revision: s.Revision, Keys: s.TotalKey, Version: s.Version}, nil
}

// snapshotStatus runs etcdutl's status, which panics on some corrupt
// databases (bbolt asserts); a panic is reported as an error.
func snapshotStatus(path string) (s snapshot.Status, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("database unreadable: %v", r)
		}
	}()
	return snapshot.NewV3(zap.NewNop()).Status(path)
}

// DefaultRevisionBump is added to the revision on restore, as etcd's
// disaster-recovery guide suggests: far more than the writes a cluster
// takes between a snapshot and its restore, so every revision a client
// saw stays older than every new one.
const DefaultRevisionBump = 1_000_000_000

// RestoreOptions rebuilds one member's data dir from a snapshot.
type RestoreOptions struct {
	Snapshot string
	// Name and PeerURL are this member's; Members is the whole new cluster
	// (every member is restored from the same snapshot).
	Name    string
	Members []Peer
	DataDir string
	// Token is the new cluster token; every member must get the same one
	// (see RestoreToken).
	Token string
	// ClientURL, when set, is where this node's member serves clients:
	// a member answering there is still running, and the restore refuses.
	ClientURL string
	// RevisionBump (default DefaultRevisionBump) and the compaction mark
	// make Kubernetes watchers see their revision compacted and relist.
	RevisionBump uint64
}

// RestoreToken makes a new cluster token from the cluster name, the
// snapshot's hash and a random nonce. Every call gives another token, so
// two restores of the same snapshot make clusters of different IDs (etcd
// derives member and cluster IDs from the token and the peer URLs): a
// member left over from the first can never rejoin the second. The token
// is made once, on the first member restored, and given to the others.
func RestoreToken(cluster, sha string) string {
	if len(sha) > 12 {
		sha = sha[:12]
	}
	var nonce [4]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic(fmt.Sprintf("etcdnode: random nonce: %v", err)) // crypto/rand does not fail on Linux
	}
	return cluster + "-restore-" + sha + "-" + hex.EncodeToString(nonce[:])
}

// ErrMemberRunning is wrapped by a restore refused because a member still
// runs on the data dir.
var ErrMemberRunning = errors.New("an etcd member is still running on it")

// checkNotRunning refuses a data dir whose database a running member holds
// (etcd keeps an exclusive flock on member/snap/db while it runs), or
// whose member still answers on its client URL.
func checkNotRunning(dataDir, clientURL string) error {
	db := filepath.Join(dataDir, "member", "snap", "db")
	f, err := os.Open(db)
	switch {
	case err == nil:
		defer f.Close()
		if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
			if errors.Is(err, unix.EWOULDBLOCK) {
				return fmt.Errorf("etcdnode: restore: refusing to restore into %s: %s is locked: %w; stop etcd on this node first", dataDir, db, ErrMemberRunning)
			}
			return fmt.Errorf("etcdnode: restore: lock %s: %w", db, err)
		}
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("etcdnode: restore: %w", err)
	}
	if clientURL != "" {
		u, err := url.Parse(clientURL)
		if err != nil {
			return fmt.Errorf("etcdnode: restore: client URL %q: %w", clientURL, err)
		}
		c, err := net.DialTimeout("tcp", u.Host, time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("etcdnode: restore: refusing to restore into %s: a member answers on %s: %w; stop etcd on this node first", dataDir, clientURL, ErrMemberRunning)
		}
	}
	return nil
}

// Restore verifies the snapshot and writes a fresh data dir for one member.
// It refuses while a member runs on the data dir (see checkNotRunning). An
// existing data dir is moved aside to DataDir.pre-restore-<time>, never
// deleted. It returns where the old data went ("" if there was none).
func Restore(o RestoreOptions, now time.Time, log *slog.Logger) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	info, err := VerifySnapshot(o.Snapshot)
	if err != nil {
		return "", err
	}
	var self *Peer
	for i := range o.Members {
		if o.Members[i].Name == o.Name {
			self = &o.Members[i]
		}
	}
	if self == nil {
		return "", fmt.Errorf("etcdnode: restore: %s is not among the members %s", o.Name, InitialClusterString(o.Members))
	}
	if o.DataDir == "" {
		return "", fmt.Errorf("etcdnode: restore: no data dir")
	}
	if o.Token == "" {
		return "", fmt.Errorf("etcdnode: restore: no cluster token")
	}
	if o.RevisionBump == 0 {
		o.RevisionBump = DefaultRevisionBump
	}
	if err := checkNotRunning(o.DataDir, o.ClientURL); err != nil {
		return "", err
	}
	moved := ""
	if _, err := os.Stat(o.DataDir); err == nil {
		moved = fmt.Sprintf("%s.pre-restore-%s", strings.TrimRight(o.DataDir, "/"), now.UTC().Format("20060102T150405Z"))
		if err := os.Rename(o.DataDir, moved); err != nil {
			return "", fmt.Errorf("etcdnode: restore: move old data dir aside: %w", err)
		}
		log.Info("moved the old etcd data dir aside", "from", o.DataDir, "to", moved)
	}
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        o.Snapshot,
		Name:                o.Name,
		OutputDataDir:       o.DataDir,
		PeerURLs:            []string{self.PeerURL},
		InitialCluster:      InitialClusterString(o.Members),
		InitialClusterToken: o.Token,
		RevisionBump:        o.RevisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		os.RemoveAll(o.DataDir) // a partial restore; the old data is at moved
		if moved != "" {
			if rerr := os.Rename(moved, o.DataDir); rerr == nil {
				moved = ""
			}
		}
		return moved, fmt.Errorf("etcdnode: restore %s into %s: %w", o.Snapshot, o.DataDir, err)
	}
	log.Info("restored etcd member from snapshot", "member", o.Name, "snapshot", o.Snapshot,
		"revision", info.Revision, "newRevisionAtLeast", info.Revision+int64(o.RevisionBump), "token", o.Token)
	return moved, nil
}

// Scheduler takes periodic snapshots on the one node that is elected and
// keeps the newest Retain of them in Dir: every node prunes its own Dir on
// every tick, elected or not.
type Scheduler struct {
	Dir      string
	Interval time.Duration
	Retain   int
	// Elected reports whether this node takes snapshots now. Use
	// LeaderCheck (the etcd raft leader: exactly one at a time, no extra
	// writes) or a concurrency.Election campaign.
	Elected func(ctx context.Context) (bool, error)
	// Save writes one verified snapshot to path (SaveSnapshot bound to a
	// client of the local member).
	Save func(ctx context.Context, path string) error
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log *slog.Logger
}

const snapshotPrefix, snapshotSuffix = "etcd-snapshot-", ".db"

// Once takes one snapshot if elected, then prunes old ones whether it
// was elected or not: leadership moves, and a node that took snapshots
// while it led must still drop the old ones (say after Retain was
// lowered) when it no longer does. It returns the path written, "" when
// not elected.
func (s *Scheduler) Once(ctx context.Context) (string, error) {
	path, err := s.take(ctx)
	if perr := s.prune(); perr != nil {
		err = errors.Join(err, perr)
	}
	return path, err
}

func (s *Scheduler) take(ctx context.Context) (string, error) {
	ok, err := s.Elected(ctx)
	if err != nil {
		return "", fmt.Errorf("etcdnode: scheduled snapshot: election check: %w", err)
	}
	if !ok {
		return "", nil
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return "", fmt.Errorf("etcdnode: scheduled snapshot: %w", err)
	}
	path := filepath.Join(s.Dir, snapshotPrefix+now().UTC().Format("20060102T150405.000Z")+snapshotSuffix)
	if err := s.Save(ctx, path); err != nil {
		return "", fmt.Errorf("etcdnode: scheduled snapshot: %w", err)
	}
	return path, nil
}

// prune deletes all but the newest Retain snapshots (names sort by time),
// and the partial files of saves that were killed midway (no save of this
// scheduler runs while it prunes). A missing Dir has nothing to prune.
func (s *Scheduler) prune() error {
	if s.Retain <= 0 {
		return nil
	}
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("etcdnode: prune snapshots: %w", err)
	}
	var names, drop []string
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(n, snapshotPrefix) {
			continue
		}
		switch {
		case strings.HasSuffix(n, snapshotSuffix):
			names = append(names, n)
		case strings.HasSuffix(n, snapshotSuffix+".part"):
			drop = append(drop, n)
		}
	}
	sort.Strings(names)
	if len(names) > s.Retain {
		drop = append(drop, names[:len(names)-s.Retain]...)
	}
	for _, n := range drop {
		if err := os.Remove(filepath.Join(s.Dir, n)); err != nil {
			return fmt.Errorf("etcdnode: prune snapshots: %w", err)
		}
	}
	return nil
}

// Run calls Once every Interval until ctx ends. A failed snapshot is
// logged and retried at the next tick.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.Interval <= 0 {
		return fmt.Errorf("etcdnode: snapshot interval %v must be positive", s.Interval)
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		path, err := s.Once(ctx)
		switch {
		case err != nil:
			log.Warn("scheduled etcd snapshot failed", "err", err)
		case path != "":
			log.Info("scheduled etcd snapshot taken", "path", path)
		}
	}
}

// LeaderCheck is a Scheduler.Elected that is true on the member that is
// the raft leader, so exactly one member takes scheduled snapshots.
func (m *Member) LeaderCheck(context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e == nil {
		return false, ErrNotStarted
	}
	return m.e.Server.Leader() == m.e.Server.MemberID(), nil
}

// SnapshotSchedule asks a running member for scheduled snapshots: every
// Interval, into Dir, keeping the Retain newest.
type SnapshotSchedule struct {
	Dir      string
	Interval time.Duration
	Retain   int
}

// RunSnapshots takes the scheduled snapshots of s through this member's
// own client URL while the member is the raft leader, so exactly one node
// of the cluster takes them, until ctx ends.
func (m *Member) RunSnapshots(ctx context.Context, s SnapshotSchedule, client ClientTLS, log *slog.Logger) error {
	tc, err := client.Config()
	if err != nil {
		return fmt.Errorf("etcdnode: scheduled snapshots: %w", err)
	}
	cli, err := NewClient([]string{m.Config().ClientURL()}, tc, 0)
	if err != nil {
		return fmt.Errorf("etcdnode: scheduled snapshots: %w", err)
	}
	defer cli.Close()
	sched := &Scheduler{Dir: s.Dir, Interval: s.Interval, Retain: s.Retain, Elected: m.LeaderCheck, Log: log,
		Save: func(ctx context.Context, path string) error {
			_, err := SaveSnapshot(ctx, cli, path)
			return err
		}}
	return sched.Run(ctx)
}
