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
	cmd.AddCommand(a.renderKubeadmCmd(), a.renderAgentCmd(), a.renderEtcdCmd(), a.renderNodeLocalKubeconfigCmd())
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
		Short: "The haplane agent's static pod manifest and systemd unit for every control-plane host, and for workers (worker/)",
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
			// One set for every worker: its node-local load balancer.
			wo := o
			wo.Worker = true
			pod, err := render.AgentPod(c, "worker", wo)
			if err != nil {
				return err
			}
			unit, err := render.AgentUnit(c, "worker", wo)
			if err != nil {
				return err
			}
			files[filepath.Join("worker", "manifests", "haplane-agent.yaml")] = pod
			files[filepath.Join("worker", "systemd", "haplane-agent.service")] = unit
			return a.writeRendered(out, files)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&out, "out", "", "folder to write OUT/<host>/ into (required)")
	cmd.Flags().StringVar(&o.Image, "image", render.DefaultAgentImage, "agent container image")
	cmd.Flags().StringVar(&o.Binary, "binary", render.DefaultAgentBinary, "agent binary path for the systemd unit")
	return cmd
}

func (a *app) renderNodeLocalKubeconfigCmd() *cobra.Command {
	var cfgPath, in, out string
	cmd := &cobra.Command{
		Use:   "node-local-kubeconfig",
		Short: "Point a worker's kubeconfig (kubelet.conf, kube-proxy's) at its node-local load balancer",
		Long: `node-local-kubeconfig rewrites every cluster of a kubeconfig to reach the
apiservers through the worker's own load balancer (haplane agent --role
worker): server https://loadBalancer.nodeLocal.listen, tls-server-name the
control-plane endpoint's host, so the apiservers' certificates verify as
through the VIP. Credentials stay. With --out equal to --in the file is
replaced atomically and the old one kept as FILE.bak; restart kubelet
afterwards.`,
		Example: `  haplane render node-local-kubeconfig -c /etc/haplane/haplane.yaml \
    --in /etc/kubernetes/kubelet.conf --out /etc/kubernetes/kubelet.conf`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := requireFlag("in", in); err != nil {
				return err
			}
			c, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(in)
			if err != nil {
				return usageError{fmt.Errorf("--in: %w", err)}
			}
			next, err := render.NodeLocalKubeconfig(c, data)
			if err != nil {
				return usageError{fmt.Errorf("--in %s: %w", in, err)}
			}
			switch out {
			case "", "-":
				_, err = a.stdout.Write(next)
				return err
			case in:
				if err := os.WriteFile(in+".bak", data, 0o600); err != nil {
					return err
				}
			}
			return writeFileAtomic(out, next, 0o600)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&in, "in", "", "kubeconfig to read (required)")
	cmd.Flags().StringVar(&out, "out", "-", `where to write it ("-": standard output; the same path as --in: in place, keeping FILE.bak)`)
	return cmd
}
