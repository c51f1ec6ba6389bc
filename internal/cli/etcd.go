package cli

import (
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
)

// etcdFlags are the flags shared by the etcd subcommands.
type etcdFlags struct {
	config   string
	pkiDir   string
	cert     string
	key      string
	cacert   string
	timeout  time.Duration
	endpoint string
}

func (f *etcdFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.config, "config", "c", "haplane.yaml", "cluster file")
	fl.StringVar(&f.pkiDir, "pki-dir", "", "PKI folder (default: certificates.dir of the cluster file)")
	fl.StringVar(&f.cert, "cert", "", "client certificate (default: <pki>/etcd/healthcheck-client.crt, else <pki>/apiserver-etcd-client.crt)")
	fl.StringVar(&f.key, "key", "", "client key (default: next to --cert)")
	fl.StringVar(&f.cacert, "cacert", "", "etcd CA (default: <pki>/etcd/ca.crt)")
	fl.DurationVar(&f.timeout, "timeout", time.Second, "probe timeout per member (one probe interval)")
}

// pki is the PKI folder: --pki-dir, else the cluster file's.
func (f *etcdFlags) pki(c *config.Cluster) string {
	if f.pkiDir != "" {
		return f.pkiDir
	}
	return c.Certificates.Dir
}

// clientTLS is --cert, --key and --cacert, else kubeadm's client
// certificate under the PKI folder.
func (f *etcdFlags) clientTLS(c *config.Cluster) etcdnode.ClientTLS {
	return etcdnode.KubeadmClientTLS(f.pki(c), etcdnode.ClientTLS{CertFile: f.cert, KeyFile: f.key, CAFile: f.cacert})
}

// access is how the etcd subcommands reach the cluster file's members.
func (a *app) access(f *etcdFlags, c *config.Cluster) etcdnode.Access {
	_, targets := etcdnode.ClusterPeers(c)
	return etcdnode.Access{TLS: f.clientTLS(c), Targets: targets, Timeout: f.timeout, Log: a.logger()}
}

func etcdMember(c *config.Cluster, name string) (config.EtcdNode, error) {
	m, err := etcdnode.ClusterMember(c, name)
	if err != nil {
		return m, usageError{err}
	}
	return m, nil
}

func (a *app) etcdCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Run, inspect and repair the HA etcd cluster",
		Long: `Run one etcd member, check the cluster, change its membership without losing
quorum, take or restore snapshots, and give space back after the NOSPACE
alarm ("haplane etcd defrag --compact --disarm").

Replacing a dead node (same name and address): rebuild the host, then either
run "haplane etcd replace NAME" from any control-plane node and start the new
node with "haplane etcd run", or just start it: a node with an empty data dir
that finds its old entry in the cluster removes the stale entry (only when
that keeps quorum), adds itself as a learner, starts with
--initial-cluster-state existing and is promoted once it has caught up.`,
	}
	cmd.AddCommand(a.etcdRunCmd(), a.etcdStatusCmd(), a.etcdRemoveCmd(), a.etcdReplaceCmd(),
		a.etcdSnapshotCmd(), a.etcdRestoreCmd(), a.etcdDefragCmd(), a.etcdRecoverCmd())
	return cmd
}

func (a *app) etcdRunCmd() *cobra.Command {
	var f etcdFlags
	var node, dataDir, metricsURL, snapDir string
	var snapEvery time.Duration
	var snapRetain int
	cmd := &cobra.Command{
		Use:   "run --node NAME",
		Short: "Run this node's etcd member until SIGTERM",
		Long: `Run this node's etcd member with its certificates from certificates.dir
(etcd/server.crt|key, etcd/peer.crt|key, etcd/ca.crt), kubeadm's flags and
client-certificate auth on the client and peer ports. A new cluster is
bootstrapped from the cluster file; a node added later joins as a learner and
is promoted once caught up. With --snapshot-dir, the member that is the etcd
leader takes a snapshot every --snapshot-interval and keeps --snapshot-retain.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlag("node", node); err != nil {
				return err
			}
			c, err := a.loadConfig(f.config)
			if err != nil {
				return err
			}
			// The same member the agent runs in the stacked topology.
			opts, err := agent.EtcdNodeOptions(c, node, f.pki(c), dataDir)
			if err != nil {
				return usageError{err}
			}
			opts.Member.MetricsURL = metricsURL
			opts.Client = f.clientTLS(c)
			if !exists(opts.Client.CertFile) {
				// The member's own server certificate is also a client
				// certificate (kubeadm issues it for both uses).
				opts.Client = etcdnode.ClientTLS{CertFile: opts.Member.TLS.CertFile, KeyFile: opts.Member.TLS.KeyFile, CAFile: opts.Member.TLS.CAFile}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log := a.logger()
			m, plan, err := etcdnode.Enter(ctx, opts, log)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			defer m.Stop()
			log.Info("etcd member running", "plan", plan.Action, "client", m.Config().ClientURL())
			if snapDir != "" {
				sched := etcdnode.SnapshotSchedule{Dir: snapDir, Interval: snapEvery, Retain: snapRetain}
				go func() {
					if err := m.RunSnapshots(ctx, sched, opts.Client, log); err != nil {
						log.Error("scheduled snapshots stopped", "err", err)
					}
				}()
			}
			select {
			case <-ctx.Done():
				log.Info("stopping etcd member")
				return nil
			case <-m.Done():
				return &ExitError{Code: ExitFailure, Err: errors.New("etcd member stopped on its own (removed from the cluster?)")}
			case err := <-m.Err():
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("etcd member failed: %w", err)}
			}
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&node, "node", "", "this node's name in the cluster file (required)")
	fl.StringVar(&dataDir, "data-dir", "", "data dir (default: etcd.dataDir of the cluster file)")
	fl.StringVar(&metricsURL, "metrics-url", etcdnode.DefaultMetricsURL, `metrics, /livez and /readyz listener ("none" to disable)`)
	fl.StringVar(&snapDir, "snapshot-dir", "", "take scheduled snapshots into this folder (on the etcd leader only)")
	fl.DurationVar(&snapEvery, "snapshot-interval", time.Hour, "time between scheduled snapshots")
	fl.IntVar(&snapRetain, "snapshot-retain", 24, "scheduled snapshots to keep")
	return cmd
}

func (a *app) etcdStatusCmd() *cobra.Command {
	var f etcdFlags
	var quota int64
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Health of every etcd member; exit 1 when the cluster has lost fault tolerance",
		Long: `Probe every member: reachable, linearizable read latency, leader, raft term,
index and lag behind the leader, learner, database size against the quota,
and alarms. A member is healthy as "etcdctl endpoint health" says: a
linearizable read of key "health" succeeds and no alarm is raised. A learner
is therefore never healthy (it refuses linearizable reads, and etcdctl calls
it unhealthy too); its "serving" field and read latency come from a
serializable read of its own copy.

Exit status: 0 when the cluster is fault tolerant, that is the healthy voting
members are at least a quorum plus one (it survives losing one more member)
and no alarm is raised; 1 otherwise (a one-member cluster is never fault
tolerant).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.loadConfig(f.config)
			if err != nil {
				return err
			}
			rep, err := etcdnode.ProbeCluster(cmd.Context(), a.access(&f, c), quota)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			if err := a.print(rep, func(w io.Writer) error { return etcdnode.WriteReport(w, rep) }); err != nil {
				return err
			}
			if !rep.FaultTolerant {
				err := fmt.Errorf("etcd: %s: %d of %d voting members healthy, quorum %d", rep.Verdict, rep.HealthyVoters, rep.Voters, rep.Quorum)
				if len(rep.Alarms) > 0 {
					err = fmt.Errorf("%w; alarms: %s", err, strings.Join(rep.Alarms, ", "))
				}
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().Int64Var(&quota, "quota-bytes", etcdnode.DefaultQuotaBackendBytes, "backend quota shown for members that do not report theirs (before etcd 3.6)")
	return cmd
}

// openOps loads the cluster file of f and opens the member operations.
func (a *app) openOps(f *etcdFlags) (*config.Cluster, *etcdnode.Ops, func(), error) {
	c, err := a.loadConfig(f.config)
	if err != nil {
		return nil, nil, nil, err
	}
	ops, done, err := a.ops(f, c)
	return c, ops, done, err
}

func (a *app) ops(f *etcdFlags, c *config.Cluster) (*etcdnode.Ops, func(), error) {
	ops, done, err := etcdnode.OpenOps(a.access(f, c))
	if err != nil {
		return nil, nil, &ExitError{Code: ExitFailure, Err: err}
	}
	return ops, done, nil
}

func (a *app) etcdRemoveCmd() *cobra.Command {
	var f etcdFlags
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a member, refusing when that would lose quorum",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ops, done, err := a.openOps(&f)
			if err != nil {
				return err
			}
			defer done()
			peerURL := ""
			if m, err := etcdMember(c, args[0]); err == nil {
				peerURL = etcdnode.PeerURLFor(m.Address, c.Etcd.PeerPort)
			}
			m, err := ops.Remove(cmd.Context(), args[0], peerURL)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return a.print(m, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "removed member %s (%x)\n", args[0], m.ID)
				return err
			})
		},
	}
	f.add(cmd)
	return cmd
}

func (a *app) etcdReplaceCmd() *cobra.Command {
	var f etcdFlags
	cmd := &cobra.Command{
		Use:   "replace NAME",
		Short: "Remove a dead member and add its rebuilt node back as a learner",
		Long: `Remove the dead member NAME (refused when it is healthy or when the removal
would lose quorum) and add NAME's address from the cluster file back as a
learner. Then start the rebuilt node with "haplane etcd run --node NAME" and an
empty data dir: it starts with --initial-cluster-state existing and is
promoted to a voting member once it has caught up.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.loadConfig(f.config)
			if err != nil {
				return err
			}
			me, err := etcdMember(c, args[0])
			if err != nil {
				return err
			}
			ops, done, err := a.ops(&f, c)
			if err != nil {
				return err
			}
			defer done()
			removed, id, err := ops.Replace(cmd.Context(), args[0], etcdnode.PeerURLFor(me.Address, c.Etcd.PeerPort))
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			out := struct {
				Removed []etcdnode.LiveMember `json:"removed"`
				Learner string                `json:"learner"`
			}{removed, fmt.Sprintf("%x", id)}
			return a.print(out, func(w io.Writer) error {
				for _, m := range removed {
					fmt.Fprintf(w, "removed stale member %s (%x)\n", m.Name, m.ID)
				}
				_, err := fmt.Fprintf(w, "learner %x added for %s; now run on %s: haplane etcd run --config %s --node %s\n", id, args[0], args[0], f.config, args[0])
				return err
			})
		},
	}
	f.add(cmd)
	return cmd
}

func (a *app) etcdDefragCmd() *cobra.Command {
	var f etcdFlags
	var opts etcdnode.DefragOptions
	cmd := &cobra.Command{
		Use:   "defrag [--compact] [--disarm]",
		Short: "Defragment every member, one at a time; recover from the NOSPACE alarm",
		Long: `Give the space of deleted and old revisions back, as etcd's maintenance guide
prescribes, when the database nears its quota or etcd has raised the NOSPACE
alarm ("mvcc: database space exceeded": writes fail, kube-apiserver is read
only):

  --compact  first compact the key space to the current revision and wait
             until it is applied (watchers behind it relist, as after
             kube-apiserver's own compaction)
  then       defragment every member one at a time, followers first and the
             leader last (a member defragmenting serves nothing until done),
             printing each database's size before and after
  --disarm   then clear the NOSPACE alarms, only once every member's database
             is below its quota

Every member must answer: with one down, defragmenting another would block
the quorum. It stops at the first failure, naming the members done.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.MemberTimeout <= 0 {
				return usageError{fmt.Errorf("--defrag-timeout %v: must be positive", opts.MemberTimeout)}
			}
			_, ops, done, err := a.openOps(&f)
			if err != nil {
				return err
			}
			defer done()
			res, err := ops.Defragment(cmd.Context(), opts)
			if perr := a.print(res, func(w io.Writer) error { return etcdnode.WriteDefrag(w, res) }); perr != nil && err == nil {
				err = perr
			}
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return nil
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&opts.Compact, "compact", false, "compact to the current revision first (physically)")
	fl.BoolVar(&opts.Disarm, "disarm", false, "clear NOSPACE alarms once every database is below its quota")
	fl.DurationVar(&opts.MemberTimeout, "defrag-timeout", etcdnode.DefaultDefragMemberTimeout, "time allowed to defragment one member")
	return cmd
}

func (a *app) etcdSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Save and verify snapshots"}
	var f etcdFlags
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot from one healthy member and verify its hash",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.loadConfig(f.config)
			if err != nil {
				return err
			}
			info, ep, err := etcdnode.SnapshotCluster(cmd.Context(), a.access(&f, c), f.endpoint, args[0])
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return a.print(info, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "saved %s from %s: revision %d, %d keys, %d bytes, sha256 %s (verified)\n", info.Path, ep, info.Revision, info.Keys, info.Size, info.SHA256)
				return err
			})
		},
	}
	f.add(save)
	save.Flags().StringVar(&f.endpoint, "endpoint", "", "member client URL to snapshot (default: the first healthy voting member)")
	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a snapshot's hash and database",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := etcdnode.VerifySnapshot(args[0])
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return a.print(info, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s: revision %d, %d keys, sha256 %s: ok\n", info.Path, info.Revision, info.Keys, info.SHA256)
				return err
			})
		},
	}
	cmd.AddCommand(save, verify)
	return cmd
}

func (a *app) etcdRestoreCmd() *cobra.Command {
	var cfgPath, node, dataDir, token string
	var bump uint64
	cmd := &cobra.Command{
		Use:   "restore FILE --node NAME",
		Short: "Rebuild this node's member from a snapshot (run on every member, same file)",
		Long: `Rebuild NAME's data dir from FILE for a new cluster of every member in the
cluster file. Stop etcd on every member first (a restore refuses while a
member runs on the data dir or answers on the node's client URL), then run
this on each of them with the same FILE. The first run makes a new cluster
token (the cluster name, the snapshot's hash and a random nonce, so two
restores of one snapshot never make the same cluster) and prints it; pass
it with --token on every other member. The old data dir is moved aside,
never deleted. The revision is bumped (--bump-revision) and marked
compacted so Kubernetes watchers relist. Then start every member again with
"haplane etcd run".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag("node", node); err != nil {
				return err
			}
			c, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			if _, err := etcdMember(c, node); err != nil {
				return err
			}
			r, err := etcdnode.RestoreCluster(c, etcdnode.RestoreClusterOptions{
				Snapshot: args[0], Node: node, DataDir: dataDir, Token: token, RevisionBump: bump,
			}, time.Now(), a.logger())
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			return a.print(r, func(w io.Writer) error {
				if r.MovedAside != "" {
					fmt.Fprintf(w, "old data dir moved to %s\n", r.MovedAside)
				}
				fmt.Fprintf(w, "restored %s into %s (snapshot revision %d, cluster token %s); start it with haplane etcd run\n", node, r.DataDir, r.Revision, r.Token)
				if r.NewToken && len(r.Others) > 0 {
					fmt.Fprintf(w, "new cluster token: restore %s with the same file and --token %s\n", strings.Join(r.Others, ", "), r.Token)
				}
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	fl.StringVar(&node, "node", "", "this node's name (required)")
	fl.StringVar(&dataDir, "data-dir", "", "data dir (default: etcd.dataDir of the cluster file)")
	fl.StringVar(&token, "token", "", "the cluster token printed by the first member's restore (default: a new one, for the first member)")
	fl.Uint64Var(&bump, "bump-revision", etcdnode.DefaultRevisionBump, "revisions to add, so watchers see their revision compacted")
	return cmd
}
