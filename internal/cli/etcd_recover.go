package cli

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/etcdnode"
)

func (a *app) etcdRecoverCmd() *cobra.Command {
	var f etcdFlags
	var from, dataDir string
	var yes, acceptLoss bool
	cmd := &cobra.Command{
		Use:   "recover --from NODE [--yes]",
		Short: "Rebuild the cluster from its last surviving member after a permanent loss of quorum",
		Long: `When a majority of the etcd members is lost for good, rebuild a one-member
cluster from NODE's data (etcd's force-new-cluster) on NODE itself, with its
etcd stopped. Without --yes it only checks and says what would be kept and
lost. It refuses while NODE's member runs, while the members that answer
would make a quorum with NODE (start NODE's etcd again instead), and while a
member that answers holds a newer revision than NODE's (recover from that
one, or pass --accept-loss). A copy of the data dir is kept beside it.

Then start etcd on NODE as usual (the agent, or "haplane etcd run"), and
once it serves ("haplane etcd status"), on every other member with an empty
data dir (move the old one aside): each joins as a learner and is promoted
once caught up. Not before: a member on an empty data dir that finds no
member answering bootstraps a new cluster from the cluster file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlag("from", from); err != nil {
				return err
			}
			c, err := a.loadConfig(f.config)
			if err != nil {
				return err
			}
			opts, err := agent.EtcdNodeOptions(c, from, f.pki(c), dataDir)
			if err != nil {
				return usageError{err}
			}
			client := f.clientTLS(c)
			if !exists(client.CertFile) {
				client = etcdnode.ClientTLS{CertFile: opts.Member.TLS.CertFile, KeyFile: opts.Member.TLS.KeyFile, CAFile: opts.Member.TLS.CAFile}
			}
			ro := etcdnode.RecoverOptions{Member: opts.Member, Client: client, Targets: opts.Targets, AcceptLoss: acceptLoss}
			var plan etcdnode.RecoverPlan
			if yes {
				plan, err = etcdnode.Recover(cmd.Context(), ro, time.Now(), a.logger())
			} else {
				plan, err = etcdnode.PlanRecover(cmd.Context(), ro)
			}
			if err != nil {
				// A refusal changes nothing: exit 2, as for a bad flag.
				if errors.Is(err, etcdnode.ErrQuorumReachable) || errors.Is(err, etcdnode.ErrNewerMember) || errors.Is(err, etcdnode.ErrMemberRunning) || plan.Survivor == "" {
					return &ExitError{Code: ExitUsage, Err: err}
				}
				return &ExitError{Code: ExitFailure, Err: err}
			}
			out := struct {
				etcdnode.RecoverPlan
				Done bool `json:"done"`
			}{plan, yes}
			return a.print(out, func(w io.Writer) error {
				if !yes {
					fmt.Fprintf(w, "recovery from %s would: %s\n", from, plan.Loss)
					fmt.Fprintln(w, "nothing changed: run again with --yes to recover")
					return nil
				}
				fmt.Fprintf(w, "recovered a one-member cluster from %s: %s\n", from, plan.Loss)
				fmt.Fprintf(w, "a copy of the old data dir is in %s\n", plan.Backup)
				fmt.Fprintf(w, "next: start etcd on %s; once it serves (haplane etcd status), start etcd on %s with empty data dirs\n", from, listOf(plan.Dropped))
				return nil
			})
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&from, "from", "", "the surviving member, this node (required)")
	fl.StringVar(&dataDir, "data-dir", "", "data dir (default: etcd.dataDir of the cluster file)")
	fl.BoolVar(&yes, "yes", false, "recover; without it, only check and print the plan")
	fl.BoolVar(&acceptLoss, "accept-loss", false, "recover although a member that answers holds a newer revision")
	return cmd
}

func listOf(s []string) string {
	switch len(s) {
	case 0:
		return "no other member"
	case 1:
		return s[0]
	}
	out := s[0]
	for _, x := range s[1 : len(s)-1] {
		out += ", " + x
	}
	return out + " and " + s[len(s)-1]
}
