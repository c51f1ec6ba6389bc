package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/render"
)

// renderCmd writes the files other tools read, per host, from the cluster
// file. Each subcommand writes OUT/<host>/<file>.
func (a *app) renderCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "render",
		Short: "Write kubeadm configurations, static pod manifests and systemd units for every host",
	}
	cmd.AddCommand(a.renderKubeadmCmd(), a.renderAgentCmd(), a.renderEtcdCmd())
	return cmd
}

type renderResult struct {
	Out   string   `json:"out"`
	Files []string `json:"files"`
}

func (a *app) writeRendered(out string, files map[string][]byte) error {
	var names []string
	for rel, data := range files {
		p := filepath.Join(out, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := writeFileAtomic(p, data, 0o644); err != nil {
			return err
		}
		names = append(names, rel)
	}
	sort.Strings(names)
	return a.print(renderResult{Out: out, Files: names}, func(w io.Writer) error {
		for _, n := range names {
			fmt.Fprintln(w, filepath.Join(out, n))
		}
		return nil
	})
}

func (a *app) renderKubeadmCmd() *cobra.Command {
	var cfgPath, out string
	cmd := &cobra.Command{
		Use:   "kubeadm",
		Short: "kubeadm v1beta4 configurations: init for the first node, join for the others, etcd for external hosts",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := requireFlag("out", out); err != nil {
				return err
			}
			c, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			kf, err := render.Kubeadm(c)
			if err != nil {
				return err
			}
			files := map[string][]byte{}
			for _, f := range kf {
				files[filepath.Join(f.Host, f.Name)] = f.Data
			}
			return a.writeRendered(out, files)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&out, "out", "", "folder to write OUT/<host>/ into (required)")
	return cmd
}

func (a *app) renderAgentCmd() *cobra.Command {
	var cfgPath, out string
	var o render.AgentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "The haplane agent's static pod manifest and systemd unit for every control-plane host",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := requireFlag("out", out); err != nil {
				return err
			}
			c, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			files := map[string][]byte{}
			for _, n := range c.Nodes {
				pod, err := render.AgentPod(c, n.Name, o)
				if err != nil {
					return err
				}
				unit, err := render.AgentUnit(c, n.Name, o)
				if err != nil {
					return err
				}
				files[filepath.Join(n.Name, "manifests", "haplane-agent.yaml")] = pod
				files[filepath.Join(n.Name, "systemd", "haplane-agent.service")] = unit
			}
			return a.writeRendered(out, files)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&out, "out", "", "folder to write OUT/<host>/ into (required)")
	cmd.Flags().StringVar(&o.Image, "image", render.DefaultAgentImage, "agent container image")
	cmd.Flags().StringVar(&o.Binary, "binary", render.DefaultAgentBinary, "agent binary path for the systemd unit")
	return cmd
}
