package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/pki"
)

func (a *app) pkiCmd() *cobra.Command {
	return group("pki", "Generate and check the kubeadm-compatible certificate set", a.pkiGenerateCmd(), a.pkiCheckCmd())
}

// pkiPlan maps the cluster file onto the PKI plan.
func pkiPlan(c *config.Cluster) *pki.Plan { return agent.PKIPlan(c) }

type pkiGenerateResult struct {
	Out     string       `json:"out"`
	Hosts   []string     `json:"hosts"`
	Written int          `json:"filesWritten"`
	Removed []string     `json:"filesRemoved"`
	Actions []pki.Action `json:"actions"`
	// Warnings repeat the actions' warnings: what generate kept although it
	// differs from the cluster file, for the operator to act on.
	Warnings []string `json:"warnings,omitempty"`
}

func (a *app) pkiGenerateCmd() *cobra.Command {
	var cfgPath, out string
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Generate the certificates and kubeconfigs of every host",
		Long: `generate writes, for every host of the cluster file, a folder shaped like
/etc/kubernetes: pki/ with exactly kubeadm's certificate set for that host, and
the kubeconfigs of a control-plane node. OUT/_ca holds every CA key: keep it
offline. Re-running keeps the CAs and every leaf that is valid, chains, matches
the cluster file and does not expire within certificates.renewBefore; the rest
is re-issued, and each action is listed. Files of kubeadm's set that a host's
folder holds but its plan no longer has (etcd member certificates and the etcd
CA key after a move to external etcd, say) are removed; other files are never
touched. A CA or service-account key of another algorithm than
certificates.keyAlgorithm is kept with a warning: replacing it would break
every certificate and token in use, so that rotation is left to you.`,
		Example: `  haplane pki generate --config haplane.yaml --out ./hosts
  # then copy hosts/cp1/* to cp1:/etc/kubernetes/ (or use haplane join)`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := requireFlag("out", out); err != nil {
				return err
			}
			c, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			plan := pkiPlan(c)
			existing, err := pki.ReadTree(out)
			if err != nil {
				return err
			}
			files, actions, err := pki.Generate(plan, existing, time.Now())
			if err != nil {
				return err
			}
			written, err := pki.WriteTree(out, files)
			if err != nil {
				return err
			}
			removed, err := pki.RemoveStale(out, actions)
			if err != nil {
				return err
			}
			res := pkiGenerateResult{Out: out, Written: len(written), Removed: removed, Actions: actions}
			if res.Removed == nil {
				res.Removed = []string{}
			}
			for _, h := range plan.Hosts {
				res.Hosts = append(res.Hosts, h.Name)
			}
			for _, act := range actions {
				switch act.Verb {
				case pki.Reissued:
					a.logger().Info("certificate reissued", "path", act.Path, "why", act.Why)
				case pki.Removed:
					a.logger().Info("stale file removed", "path", act.Path, "why", act.Why)
				case pki.Created:
					a.logger().Debug("certificate created", "path", act.Path)
				}
				if act.Warning != "" {
					a.logger().Warn("kept although it differs from the cluster file", "path", act.Path, "warning", act.Warning)
					res.Warnings = append(res.Warnings, act.Path+": "+act.Warning)
				}
			}
			return a.print(res, func(w io.Writer) error {
				counts := map[string]int{}
				for _, act := range actions {
					counts[act.Verb]++
					switch {
					case act.Verb == pki.Reissued || act.Verb == pki.Removed:
						fmt.Fprintf(w, "%s %s: %s\n", act.Verb, act.Path, act.Why)
					case act.Warning != "":
						fmt.Fprintf(w, "warning: kept %s: %s\n", act.Path, act.Warning)
					}
				}
				_, err := fmt.Fprintf(w, "%s: PKI for %s (%d created, %d reissued, %d kept, %d removed; %d files written)\n",
					out, strings.Join(res.Hosts, ", "), counts[pki.Created], counts[pki.Reissued], counts[pki.Kept], len(removed), len(written))
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&out, "out", "", "folder to write the hosts' trees into (required)")
	return cmd
}

// defaultConfigFile is the cluster file commands read from the working
// folder when --config is not given.
const defaultConfigFile = "haplane.yaml"

type pkiCheckResult struct {
	Dir   string           `json:"dir"`
	Node  string           `json:"node,omitempty"`
	Certs []pki.CertStatus `json:"certificates"`
	OK    bool             `json:"ok"`
}

func (a *app) pkiCheckCmd() *cobra.Command {
	var cfgPath, dir, node, warnS string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Report expiry, chain and SAN drift of a host's certificates",
		Long: `check reads a host's PKI folder (like /etc/kubernetes/pki; the kubeconfigs are
read from its parent folder, as kubeadm lays them out) and prints, for every
certificate, when it expires, the CA that signed it, whether it chains and
whether its names drifted from the cluster file (SAN DRIFT: "-" when not
checked). The cluster file is --config, by default haplane.yaml when the
working folder has one; --config "" checks expiry and chains only. With a
cluster file each leaf must be signed by its own CA of the plan, and a CA key
or kubeadm certificate the plan does not give this host is reported as
unexpected. It exits 1 when a certificate is expired, expires within --warn,
drifted, is missing, unexpected or does not chain.`,
		Example: `  haplane pki check --dir /etc/kubernetes/pki --config /etc/haplane/haplane.yaml
  haplane pki check --dir hosts/cp1/pki --warn 90d --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlag("dir", dir); err != nil {
				return err
			}
			// The cluster file is used by default only when it is there:
			// check must work on a host that has just its PKI folder.
			implicit := !cmd.Flags().Changed("config")
			if implicit {
				if _, err := os.Stat(defaultConfigFile); err == nil {
					cfgPath = defaultConfigFile
				}
			}
			warn, err := config.ParseDuration(warnS)
			if err != nil || warn < 0 {
				return usageError{fmt.Errorf("--warn: %q is not a duration such as 30d or 720h", warnS)}
			}
			if _, err := os.Stat(dir); err != nil {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("pki check: %w", err)}
			}
			var plan *pki.Plan
			if cfgPath != "" {
				c, err := a.loadConfig(cfgPath)
				if err != nil {
					return err
				}
				plan = pkiPlan(c)
				if node == "" {
					// The generated layout is OUT/<host>/pki; on a host
					// (/etc/kubernetes/pki) the node is this machine.
					node = filepath.Base(filepath.Dir(filepath.Clean(dir)))
					if _, ok := plan.Host(node); !ok {
						if hn, err := os.Hostname(); err == nil {
							if _, ok := plan.Host(hn); ok {
								node = hn
							}
						}
					}
				}
				if _, ok := plan.Host(node); !ok {
					hint := "set --node"
					if implicit {
						hint = "set --node, or --config \"\" to check without the cluster file"
					}
					return usageError{fmt.Errorf("--node: %q is not a host of %s (%s)", node, cfgPath, hint)}
				}
			}
			parent := filepath.Dir(filepath.Clean(dir))
			files := map[string][]byte{}
			pkiFiles, err := pki.ReadTree(dir)
			if err != nil {
				return err
			}
			for k, v := range pkiFiles {
				files["pki/"+k] = v
			}
			if entries, err := os.ReadDir(parent); err == nil {
				for _, e := range entries {
					if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".conf") {
						if data, err := os.ReadFile(filepath.Join(parent, e.Name())); err == nil {
							files[e.Name()] = data
						}
					}
				}
			}
			statuses := pki.Check(files, plan, node, time.Now(), warn)
			res := pkiCheckResult{Dir: dir, Node: node, Certs: statuses, OK: len(statuses) > 0}
			for _, s := range statuses {
				res.OK = res.OK && s.OK()
			}
			if err := a.print(res, func(w io.Writer) error { return pki.WriteCertTable(w, statuses) }); err != nil {
				return err
			}
			if !res.OK {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("pki check: %s has certificate problems", dir)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "/etc/kubernetes/pki", "the host's PKI folder")
	f.StringVarP(&cfgPath, "config", "c", "", `cluster file, to check names, signers and the file set against it (default: `+defaultConfigFile+` when it exists in the working folder; "" for none)`)
	f.StringVar(&node, "node", "", "the host's name in the cluster file (default: the folder above --dir)")
	f.StringVar(&warnS, "warn", "30d", "fail when a certificate expires within this")
	return cmd
}
