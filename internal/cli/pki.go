package cli

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/pki"
)

func (a *app) pkiCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Generate and check the kubeadm-compatible certificate set",
	}
	cmd.AddCommand(a.pkiGenerateCmd(), a.pkiCheckCmd())
	return cmd
}

// pkiPlan maps the cluster file onto the PKI plan.
func pkiPlan(c *config.Cluster) *pki.Plan {
	p := &pki.Plan{
		ClusterName:   c.Name,
		EndpointHost:  c.EndpointHost(),
		EndpointPort:  c.ControlPlaneEndpoint.Port,
		APIServerPort: c.ControlPlaneEndpoint.APIServerPort,
		ServiceSubnet: netip.MustParsePrefix(c.Networking.ServiceSubnet),
		DNSDomain:     c.Networking.DNSDomain,
		ExternalEtcd:  c.Etcd.Topology == config.TopologyExternal,
		Validity:      c.Certificates.Validity.Duration,
		CAValidity:    c.Certificates.CAValidity.Duration,
		RenewBefore:   c.Certificates.RenewBefore.Duration,
		KeyAlgorithm:  c.Certificates.KeyAlgorithm,
	}
	// The VIP and DNS name are on every apiserver certificate, as kubeadm's
	// apiServer.certSANs, so a certificate stays valid whoever holds the VIP.
	p.ExtraAPIServerSANs = append(p.ExtraAPIServerSANs, c.ControlPlaneEndpoint.VIP)
	if c.ControlPlaneEndpoint.DNSName != "" {
		p.ExtraAPIServerSANs = append(p.ExtraAPIServerSANs, c.ControlPlaneEndpoint.DNSName)
	}
	for _, n := range c.Nodes {
		p.Hosts = append(p.Hosts, pki.Host{Name: n.Name, Address: n.Addr(), Role: pki.RoleControlPlane})
	}
	if p.ExternalEtcd {
		for _, e := range c.Etcd.Nodes {
			a, _ := netip.ParseAddr(e.Address)
			p.Hosts = append(p.Hosts, pki.Host{Name: e.Name, Address: a, Role: pki.RoleEtcd})
		}
	}
	return p
}

type pkiGenerateResult struct {
	Out     string       `json:"out"`
	Hosts   []string     `json:"hosts"`
	Written int          `json:"filesWritten"`
	Actions []pki.Action `json:"actions"`
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
is re-issued, and each action is listed.`,
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
			res := pkiGenerateResult{Out: out, Written: len(written), Actions: actions}
			for _, h := range plan.Hosts {
				res.Hosts = append(res.Hosts, h.Name)
			}
			for _, act := range actions {
				switch act.Verb {
				case "reissued":
					a.logger().Info("certificate reissued", "path", act.Path, "why", act.Why)
				case "created":
					a.logger().Debug("certificate created", "path", act.Path)
				}
			}
			return a.print(res, func(w io.Writer) error {
				counts := map[string]int{}
				for _, act := range actions {
					counts[act.Verb]++
					if act.Verb == "reissued" {
						fmt.Fprintf(w, "reissued %s: %s\n", act.Path, act.Why)
					}
				}
				_, err := fmt.Fprintf(w, "%s: PKI for %s (%d created, %d reissued, %d kept; %d files written)\n",
					out, strings.Join(res.Hosts, ", "), counts["created"], counts["reissued"], counts["kept"], len(written))
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&out, "out", "", "folder to write the hosts' trees into (required)")
	return cmd
}

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
certificate, when it expires, the CA that signed it, whether it chains and,
with --config, whether its names drifted from the cluster file. It exits 1
when a certificate is expired, expires within --warn, drifted, is missing or
does not chain.`,
		Example: `  haplane pki check --dir /etc/kubernetes/pki --config /etc/haplane/haplane.yaml
  haplane pki check --dir hosts/cp1/pki --warn 90d --output json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := requireFlag("dir", dir); err != nil {
				return err
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
					// The generated layout is OUT/<host>/pki.
					node = filepath.Base(filepath.Dir(filepath.Clean(dir)))
				}
				if _, ok := plan.Host(node); !ok {
					return usageError{fmt.Errorf("--node: %q is not a host of %s (set --node)", node, cfgPath)}
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
			if err := a.print(res, func(w io.Writer) error { return printCertTable(w, statuses) }); err != nil {
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
	f.StringVarP(&cfgPath, "config", "c", "", "cluster file, to check names against it")
	f.StringVar(&node, "node", "", "the host's name in the cluster file (default: the folder above --dir)")
	f.StringVar(&warnS, "warn", "30d", "fail when a certificate expires within this")
	return cmd
}

func printCertTable(w io.Writer, statuses []pki.CertStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tRESIDUAL TIME\tCA\tCHAIN\tSTATUS")
	for _, s := range statuses {
		exp, res := "-", "-"
		if !s.Expires.IsZero() {
			exp = s.Expires.UTC().Format("Jan 02, 2006 15:04 MST")
			res = humanDuration(s.Residual)
		}
		chain := "ok"
		if !s.ChainOK {
			chain = "BROKEN"
		}
		status := "ok"
		if !s.OK() {
			status = strings.Join(s.Problems, "; ")
		}
		if s.Drift != "" {
			status += " (" + s.Drift + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, exp, res, s.CA, chain, status)
	}
	return tw.Flush()
}

// humanDuration is kubeadm's residual-time style: 364d, 9y, 23h.
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "expired"
	case d >= 2*365*24*time.Hour:
		return fmt.Sprintf("%dy", int(d.Hours()/24/365))
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
}
