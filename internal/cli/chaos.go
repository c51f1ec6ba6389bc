package cli

import (
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/lab"
)

// labChaosCmd breaks the running lab on purpose, scenario by scenario, and
// reports what a client of the API saw.
func (a *app) labChaosCmd(dir *string) *cobra.Command {
	var scenarios []string
	var reportDir, upgradeTo string
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Break the lab on purpose and measure what a client of the API sees",
		Long: `chaos runs fault scenarios against the running lab, one after another,
each from a settled cluster: ` + strings.Join(lab.Scenarios(), ", ") + `.

For each, the client host opens a new TLS connection to the VIP's /readyz
every 10ms (a scenario's second path, and the node-local load balancer on a
lab with one, every 20ms), creates objects through the VIP and reads every acknowledged one
back afterwards, and follows the scheduler's and controller-manager's leader
Leases. It prints a table and, with --report, writes chaos.json and
chaos.html (a timeline per scenario). It exits 1 when a scenario fails.`,
		Args: cobra.NoArgs,
		RunE: withLab(dir, func(cmd *cobra.Command, st *lab.State, _ []string) (err error) {
			opts := lab.ChaosOptions{Scenarios: scenarios}
			if opts.UpgradeBin, err = st.UpgradeBinaries(cmd.Context(), upgradeTo, a.stderr); err != nil {
				return flagError(err)
			}
			rep, err := lab.RunChaosReport(cmd.Context(), lab.NewChaosEnv(st, a.stderr), opts, reportDir)
			if err != nil {
				return err
			}
			if err := a.print(rep, func(w io.Writer) error { return lab.WriteTable(w, rep) }); err != nil {
				return err
			}
			return rep.Failure()
		}),
	}
	cmd.Flags().StringSliceVar(&scenarios, "scenario", []string{"all"}, "scenarios to run (comma-separated), or all")
	cmd.Flags().StringVar(&reportDir, "report", "", "write chaos.json and chaos.html into this folder")
	cmd.Flags().StringVar(&upgradeTo, "upgrade-to", "", "Kubernetes release (v1.MINOR.PATCH) the rolling-upgrade scenario moves the control plane to, built from the Go module proxy and cached like the lab's own (without it that scenario is skipped)")
	_ = cmd.RegisterFlagCompletionFunc("scenario", cobra.FixedCompletions(append(lab.Scenarios(), "all"), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// labObserveCmd is the client side of a chaos scenario: probes, writes,
// lease holders, then the read-back (run by lab chaos in the client host).
func (a *app) labObserveCmd() *cobra.Command {
	var cfg lab.ObserveConfig
	var t0 int64
	cmd := &cobra.Command{
		Use:    "observe",
		Short:  "Probe, write through and watch the lab from the client host (used by lab chaos)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if t0 != 0 {
				cfg.T0 = time.Unix(0, t0)
			}
			obs, err := lab.Observe(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return a.printf(obs, "%d requests, %d failed, %d slow, longest gap %s; %d writes, %d lost\n",
				obs.Requests, obs.Failed, obs.Slow, obs.MaxGap.Round(time.Millisecond), obs.Writes, obs.Lost)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Endpoint, "endpoint", "", "the VIP's URL")
	f.StringVar(&cfg.CAFile, "ca", "", "cluster CA")
	f.StringVar(&cfg.ProbePath, "path", "/readyz", "path probed")
	f.StringSliceVar(&cfg.AlsoPaths, "also-path", nil, "further paths probed the same way (every --also-every), summarized apart")
	f.StringVar(&cfg.LocalEndpoint, "local-endpoint", "", "a node-local load balancer on this host (https://127.0.0.1:6443): the path is probed through it too, summarized apart")
	f.DurationVar(&cfg.Every, "every", 10*time.Millisecond, "probe interval")
	f.DurationVar(&cfg.AlsoEvery, "also-every", 0, "probe interval of --also-path and --local-endpoint (default twice --every)")
	f.Int64Var(&t0, "t0", 0, "scenario start, Unix nanoseconds (default now)")
	f.DurationVar(&cfg.For, "for", 5*time.Second, "how long to probe and write")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig (kube backend): write ConfigMaps and follow the leader Leases")
	f.StringVar(&cfg.Run, "run", "", "name of this run's objects")
	return cmd
}
