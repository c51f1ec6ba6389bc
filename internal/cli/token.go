package cli

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/join"
)

// tokenFlags locate the cluster and its etcd client certificate. Tokens
// live only in etcd: every control-plane node's agent reads them there, so a
// token made on one node is honoured by whichever node holds the VIP (a
// per-node file would make tokens no agent honours).
type tokenFlags struct {
	config, pkiDir string
}

func (f *tokenFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.config, "config", "c", "/etc/haplane/haplane.yaml", "cluster file")
	fl.StringVar(&f.pkiDir, "pki-dir", "", "PKI folder (default certificates.dir from the cluster file)")
}

// openTokenStore loads the cluster file and opens the etcd token store the
// agents' join servers use; closeFn releases it.
func (a *app) openTokenStore(f *tokenFlags) (c *config.Cluster, pkiDir string, st join.TokenStore, closeFn func(), err error) {
	c, err = a.loadConfig(f.config)
	if err != nil {
		return nil, "", nil, nil, err
	}
	pkiDir = f.pkiDir
	if pkiDir == "" {
		pkiDir = c.Certificates.Dir
	}
	st, closeFn, err = a.tokenStore(c, pkiDir)
	if err != nil {
		return nil, "", nil, nil, err
	}
	return c, pkiDir, st, closeFn, nil
}

// tokenStore opens the token store of c's agents.
func (a *app) tokenStore(c *config.Cluster, pkiDir string) (join.TokenStore, func(), error) {
	cli, err := agent.JoinEtcdClient(c, pkiDir)
	if err != nil {
		return nil, nil, err
	}
	return &join.EtcdStore{Client: cli}, func() { cli.Close() }, nil
}

// caHashOf reads a PEM CA certificate and returns its public-key pin.
func caHashOf(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return "", fmt.Errorf("%s: not a PEM certificate", path)
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return join.CAHash(ca), nil
}

type tokenCreated struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	Server  string    `json:"server"`
	CAHash  string    `json:"caHash"`
	Command string    `json:"command"`
}

func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create and list single-use tokens for joining control-plane nodes",
	}
	var f tokenFlags
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a single-use join token and print the join command",
		Long: `create stores a new single-use token (only its hash is kept) and prints the
command a new control-plane host runs to join: it pins the cluster CA by the
hash of its public key, so it trusts nothing else.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if ttl <= 0 || ttl > 24*time.Hour {
				return usageError{fmt.Errorf("--ttl: %s must be between 1s and 24h", ttl)}
			}
			c, pkiDir, st, closeFn, err := a.openTokenStore(&f)
			if err != nil {
				return err
			}
			defer closeFn()
			hash, err := caHashOf(filepath.Join(pkiDir, "ca.crt"))
			if err != nil {
				return fmt.Errorf("token: cluster CA: %w", err)
			}
			now := time.Now()
			tok, err := st.Create(c.Name, ttl, now)
			if err != nil {
				return err
			}
			server := net.JoinHostPort(c.EndpointHost(), strconv.Itoa(join.DefaultPort))
			out := tokenCreated{
				Token: tok.String(), Expires: now.Add(ttl).UTC().Truncate(time.Second), Server: server, CAHash: hash,
				Command: fmt.Sprintf("haplane join --server %s --token %s --ca-hash %s --node NAME", server, tok, hash),
			}
			a.logger().Info("join token created", "id", tok.ID, "expires", out.Expires)
			return a.print(out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s\n# single use; expires %s. Add the node to the cluster file first.\n", out.Command, out.Expires.Format(time.RFC3339))
				return err
			})
		},
	}
	f.register(create)
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token stays valid (at most 24h)")

	var lf tokenFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, _, st, closeFn, err := a.openTokenStore(&lf)
			if err != nil {
				return err
			}
			defer closeFn()
			toks, err := st.List()
			if err != nil {
				return err
			}
			return a.print(toks, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tCLUSTER\tEXPIRES\tUSED BY")
				for _, t := range toks {
					used := "-"
					if t.Used {
						used = t.UsedBy
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Cluster, t.Expires.Format(time.RFC3339), used)
				}
				return tw.Flush()
			})
		},
	}
	lf.register(list)
	cmd.AddCommand(create, list)
	return cmd
}
