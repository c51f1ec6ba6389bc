package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/pki"
)

func (a *app) initCmd() *cobra.Command {
	var (
		out, name, vip, iface string
		nodes, etcdNodes      []string
		force                 bool
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a commented example cluster file that validates",
		Long: `init writes a commented haplane.yaml. Without flags it describes a three-node
lab on 10.77.0.0/24; --vip, --interface and --node shape it for real hosts.`,
		Example: `  haplane init
  haplane init --out - --vip 192.0.2.10 --interface bond0 \
    --node cp1=192.0.2.11 --node cp2=192.0.2.12 --node cp3=192.0.2.13`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			o := config.ExampleOptions{Name: name, VIP: vip, Interface: iface}
			var err error
			if o.Nodes, err = parseNodeFlags("node", nodes, func(n, a string) config.Node { return config.Node{Name: n, Address: a} }); err != nil {
				return err
			}
			if o.EtcdNodes, err = parseNodeFlags("etcd-node", etcdNodes, func(n, a string) config.EtcdNode { return config.EtcdNode{Name: n, Address: a} }); err != nil {
				return err
			}
			data := config.Example(o)
			// The flags may still describe an invalid cluster (a VIP equal to
			// a node address): say so now rather than at the first load.
			if _, err := config.Parse(out, data); err != nil {
				return &ExitError{Code: ExitUsage, Err: fmt.Errorf("the flags describe an invalid cluster:\n%v", err)}
			}
			if out == "-" {
				_, err := a.stdout.Write(data)
				return err
			}
			if exists(out) && !force {
				return usageError{fmt.Errorf("%s exists; use --force to overwrite it", out)}
			}
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				return err
			}
			if err := pki.WriteFileAtomic(out, data, 0o644); err != nil {
				return err
			}
			return a.print(map[string]string{"written": out}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "wrote %s; check it with: haplane validate --config %s\n", out, out)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "haplane.yaml", `file to write, or "-" for standard output`)
	f.BoolVar(&force, "force", false, "overwrite an existing file")
	f.StringVar(&name, "name", "", "cluster name (default lab)")
	f.StringVar(&vip, "vip", "", "virtual IP of the API endpoint (default 10.77.0.100)")
	f.StringVar(&iface, "interface", "", "link the VIP lives on (default eth0)")
	f.StringArrayVar(&nodes, "node", nil, "control-plane node as NAME=ADDRESS (repeat; default cp1..cp3 on 10.77.0.11-13)")
	f.StringArrayVar(&etcdNodes, "etcd-node", nil, "external etcd host as NAME=ADDRESS (repeat; selects the external topology)")
	return cmd
}

func parseNodeFlags[T any](flag string, vals []string, mk func(name, addr string) T) ([]T, error) {
	var out []T
	for _, v := range vals {
		n, addr, ok := strings.Cut(v, "=")
		if !ok || n == "" || addr == "" {
			return nil, usageError{fmt.Errorf("--%s %q: want NAME=ADDRESS", flag, v)}
		}
		out = append(out, mk(n, addr))
	}
	return out, nil
}

type validateResult struct {
	File    string              `json:"file"`
	Valid   bool                `json:"valid"`
	Errors  []config.FieldError `json:"errors,omitempty"`
	Summary *config.Summary     `json:"summary,omitempty"`
}

func (a *app) validateCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a cluster file and report every problem at once",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := requireFlag("config", path); err != nil {
				return err
			}
			c, err := config.Load(path)
			var ve *config.Errors
			switch {
			case errors.As(err, &ve):
				if a.jsonOutput() {
					_ = a.print(validateResult{File: path, Errors: ve.List}, nil)
				} else {
					for _, e := range ve.List {
						fmt.Fprintln(a.stderr, e.Error())
					}
				}
				return &ExitError{Code: ExitUsage, Err: fmt.Errorf("%s: %d problem(s) found", path, len(ve.List))}
			case err != nil:
				return &ExitError{Code: ExitUsage, Err: err}
			}
			s := c.Summarize()
			return a.print(validateResult{File: path, Valid: true, Summary: &s}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s: valid: %s\n", path, s)
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "haplane.yaml", "cluster file")
	return cmd
}
