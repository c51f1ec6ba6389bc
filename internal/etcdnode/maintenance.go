package etcdnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefragOptions says what Ops.Defragment does besides defragmenting.
type DefragOptions struct {
	// Compact compacts the key space to the current revision first and
	// waits until the compaction is applied to the database (etcdctl
	// compact --physical), so defragmentation can give the space of every
	// old revision back. Watchers behind that revision get "required
	// revision has been compacted" and relist, as after the compaction
	// kube-apiserver runs every five minutes.
	Compact bool
	// Disarm clears the NOSPACE alarms once every member's database is
	// below its quota. Other alarms (CORRUPT) are never touched.
	Disarm bool
	// MemberTimeout bounds the defragmentation of one member (default 5
	// minutes; etcd rewrites the whole database, at disk speed).
	MemberTimeout time.Duration
}

// DefaultDefragMemberTimeout is DefragOptions.MemberTimeout's default.
const DefaultDefragMemberTimeout = 5 * time.Minute

// DefragMember is one member's defragmentation.
type DefragMember struct {
	Name     string `json:"name"`
	ID       string `json:"id"`
	Endpoint string `json:"endpoint"`
	Leader   bool   `json:"leader"`
	// DBSize* are the database size (what the quota is checked against)
	// and the part of it in use, before and after.
	DBSizeBefore      int64 `json:"dbSizeBefore"`
	DBSizeInUseBefore int64 `json:"dbSizeInUseBefore"`
	DBSizeAfter       int64 `json:"dbSizeAfter"`
	DBSizeInUseAfter  int64 `json:"dbSizeInUseAfter"`
	// Quota is the member's backend quota as it reports it.
	Quota int64 `json:"quotaBytes"`
	// Seconds is how long the member was blocked defragmenting.
	Seconds float64 `json:"seconds"`
}

// DefragResult is what Ops.Defragment did, as far as it got.
type DefragResult struct {
	// CompactedRevision is the revision compacted to (0: no compaction).
	CompactedRevision int64 `json:"compactedRevision,omitempty"`
	// Members are the members defragmented, in order.
	Members []DefragMember `json:"members"`
	// Pending are the members not defragmented (after a failure).
	Pending []string `json:"pending,omitempty"`
	// Disarmed are the alarms cleared, as "NOSPACE on <member id>".
	Disarmed []string `json:"disarmed,omitempty"`
	// Alarms are the alarms still raised at the end.
	Alarms []string `json:"alarms,omitempty"`
}

// Done names the members defragmented.
func (r DefragResult) Done() []string {
	var out []string
	for _, m := range r.Members {
		out = append(out, m.Name)
	}
	return out
}

// ErrUnreachable is returned when a member to defragment does not answer.
var ErrUnreachable = errors.New("etcdnode: member unreachable")

// Defragment gives the space of deleted and old revisions back to the file
// system the way etcd's maintenance guide prescribes: optionally compact
// to the current revision, then defragment every started member (learners
// and followers first, the leader last) one at a time, since a member
// defragmenting neither reads nor writes; then, with Disarm, clear the
// NOSPACE alarms once every database is below its quota.
//
// The compaction is waited for on the member that took the request, and
// each other member is defragmented only once it has applied the
// compaction too (its raft applied index has reached the compaction's,
// and its in-use size has stopped falling), bounded by MemberTimeout: a
// member defragmented before its compaction ran would keep its size.
//
// It refuses to start while a member is unreachable: with one member down,
// defragmenting another blocks the quorum. It stops at the first failure
// and returns what it did so far, the members done and pending named in
// the error.
func (o *Ops) Defragment(ctx context.Context, opts DefragOptions) (DefragResult, error) {
	if opts.MemberTimeout <= 0 {
		opts.MemberTimeout = DefaultDefragMemberTimeout
	}
	var res DefragResult
	rep := o.Prober.Probe(ctx, o.Targets)
	if !rep.Listed {
		return res, ErrNoCluster
	}
	var todo []MemberStatus
	var down []string
	for _, m := range rep.Members {
		switch {
		case m.ID == "" || !m.Started:
			// Configured but not a member, or added but never run: no
			// database to defragment.
		case !m.Reachable:
			down = append(down, fmt.Sprintf("%s (%s)", m.Name, m.Error))
		default:
			todo = append(todo, m)
		}
	}
	if len(down) > 0 {
		return res, fmt.Errorf("%w: %s; defragmenting another member while one is down can block the quorum: bring it back or remove it first", ErrUnreachable, strings.Join(down, ", "))
	}
	if len(todo) == 0 {
		return res, ErrNoCluster
	}
	// Learners, then followers, then the leader: defragmenting the leader
	// blocks every write, so it goes last, once the others have their
	// space back.
	slices.SortStableFunc(todo, func(a, b MemberStatus) int {
		rank := func(m MemberStatus) int {
			switch {
			case m.Learner:
				return 0
			case m.Leader:
				return 2
			}
			return 1
		}
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(a.Name, b.Name)
	})

	var compactIndex uint64 // raft index the compaction is applied at, 0 without one
	if opts.Compact {
		rev, idx, err := o.compact(ctx, todo)
		if err != nil {
			return res, err
		}
		res.CompactedRevision, compactIndex = rev, idx
	}

	for i, m := range todo {
		if compactIndex > 0 {
			o.waitCompacted(ctx, m, compactIndex, opts.MemberTimeout)
		}
		dm, err := o.defragOne(ctx, m, opts.MemberTimeout)
		if err != nil {
			for _, p := range todo[i:] {
				res.Pending = append(res.Pending, p.Name)
			}
			return res, fmt.Errorf("etcdnode: defrag %s: %w (defragmented: %s; not defragmented: %s)",
				m.Name, err, listOrNone(res.Done()), strings.Join(res.Pending, ", "))
		}
		res.Members = append(res.Members, dm)
	}

	alarms, err := o.Client.AlarmList(ctx)
	if err != nil {
		return res, fmt.Errorf("etcdnode: alarm list: %w", err)
	}
	left := alarms.Alarms
	if opts.Disarm && slices.ContainsFunc(left, isNoSpace) {
		if err := res.belowQuota(); err != nil {
			res.Alarms = alarmStrings(left)
			return res, err
		}
		left = nil
		for _, a := range alarms.Alarms {
			if !isNoSpace(a) {
				left = append(left, a)
				continue
			}
			if _, err := o.Client.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm}); err != nil {
				res.Alarms = alarmStrings(alarms.Alarms)
				return res, fmt.Errorf("etcdnode: disarm %s on %x: %w", a.Alarm, a.MemberID, err)
			}
			res.Disarmed = append(res.Disarmed, alarmString(a))
			o.log().Info("disarmed etcd alarm", "alarm", a.Alarm.String(), "member", fmt.Sprintf("%x", a.MemberID))
		}
	}
	res.Alarms = alarmStrings(left)
	return res, nil
}

// compact compacts to the current revision, read from the first member
// that answers, and waits until the compaction is physically applied on
// the member that took it. It returns the revision and a raft index at or
// after the compaction's entry (0 when none could be read).
func (o *Ops) compact(ctx context.Context, members []MemberStatus) (int64, uint64, error) {
	var rev int64
	var errs []error
	for _, m := range members {
		st, err := o.Client.Status(ctx, m.Endpoint)
		if err == nil && st.Header != nil {
			rev = st.Header.Revision
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
	}
	if rev == 0 {
		return 0, 0, fmt.Errorf("etcdnode: compact: current revision: %w", errors.Join(errs...))
	}
	start := time.Now()
	_, err := o.Client.Compact(ctx, rev, clientv3.WithCompactPhysical())
	if errors.Is(err, rpctypes.ErrCompacted) {
		// Compacted to rev or later already (by kube-apiserver, say).
		err = nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("etcdnode: compact to revision %d: %w", rev, err)
	}
	o.log().Info("compacted etcd", "revision", rev, "took", time.Since(start).Round(time.Millisecond))
	var idx uint64
	for _, m := range members {
		// The committed index of any member now is at or after the
		// compaction's entry, which it committed before answering.
		if st, err := o.Client.Status(ctx, m.Endpoint); err == nil && st.RaftIndex > idx {
			idx = st.RaftIndex
		}
	}
	return rev, idx, nil
}

// compactedPoll is how often waitCompacted reads a member's status.
const compactedPoll = 100 * time.Millisecond

// waitCompacted waits, at most timeout, until m has applied the raft
// entries up to idx and its in-use size has stopped falling (the
// compaction deletes in batches after it is applied). It only waits: a
// member that does not get there is defragmented anyway, and the size
// check after the defragmentation tells.
func (o *Ops) waitCompacted(ctx context.Context, m MemberStatus, idx uint64, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last int64 = -1
	for {
		st, err := o.Client.Status(ctx, m.Endpoint)
		if err == nil && st.RaftAppliedIndex >= idx {
			if st.DbSizeInUse == last {
				return
			}
			last = st.DbSizeInUse
		}
		select {
		case <-ctx.Done():
			o.log().Warn("etcd member's compaction not seen applied; defragmenting anyway", "member", m.Name, "index", idx)
			return
		case <-time.After(compactedPoll):
		}
	}
}

// defragOne defragments one member and reads its size before and after.
func (o *Ops) defragOne(ctx context.Context, m MemberStatus, timeout time.Duration) (DefragMember, error) {
	dm := DefragMember{Name: m.Name, ID: m.ID, Endpoint: m.Endpoint, Leader: m.Leader}
	before, err := o.Client.Status(ctx, m.Endpoint)
	if err != nil {
		return dm, fmt.Errorf("status before: %w", err)
	}
	dm.DBSizeBefore, dm.DBSizeInUseBefore, dm.Quota = before.DbSize, before.DbSizeInUse, before.DbSizeQuota
	o.log().Info("defragmenting etcd member", "member", m.Name, "dbSize", before.DbSize, "inUse", before.DbSizeInUse)
	dctx, cancel := context.WithTimeout(ctx, timeout)
	start := time.Now()
	_, err = o.Client.Defragment(dctx, m.Endpoint)
	dm.Seconds = time.Since(start).Seconds()
	cancel()
	if err != nil {
		return dm, err
	}
	after, err := o.Client.Status(ctx, m.Endpoint)
	if err != nil {
		return dm, fmt.Errorf("status after: %w", err)
	}
	dm.DBSizeAfter, dm.DBSizeInUseAfter = after.DbSize, after.DbSizeInUse
	if dm.Quota == 0 {
		dm.Quota = after.DbSizeQuota
	}
	o.log().Info("defragmented etcd member", "member", m.Name, "before", dm.DBSizeBefore, "after", dm.DBSizeAfter,
		"took", time.Duration(dm.Seconds*float64(time.Second)).Round(time.Millisecond))
	return dm, nil
}

// belowQuota fails unless every member's database is now below its quota:
// disarming NOSPACE before that only has the next write raise it again.
func (r DefragResult) belowQuota() error {
	var over []string
	for _, m := range r.Members {
		quota := m.Quota
		if quota <= 0 {
			quota = DefaultQuotaBackendBytes
		}
		if m.DBSizeAfter >= quota {
			over = append(over, fmt.Sprintf("%s %d of %d bytes", m.Name, m.DBSizeAfter, quota))
		}
	}
	if len(over) > 0 {
		return fmt.Errorf("etcdnode: NOSPACE alarm left armed: database still at or over its quota after defragmentation (%s); compact first (--compact), delete data, or raise quotaBackendBytes", strings.Join(over, ", "))
	}
	return nil
}

func isNoSpace(a *etcdserverpb.AlarmMember) bool { return a.Alarm == etcdserverpb.AlarmType_NOSPACE }

// alarmString formats an alarm as Probe does.
func alarmString(a *etcdserverpb.AlarmMember) string {
	return fmt.Sprintf("%s on %x", a.Alarm, a.MemberID)
}

func alarmStrings(as []*etcdserverpb.AlarmMember) []string {
	var out []string
	for _, a := range as {
		out = append(out, alarmString(a))
	}
	return out
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
