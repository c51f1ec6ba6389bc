package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/pki"
	"github.com/haplane/haplane/internal/render"
)

// renderCmd writes the files other tools read, per host, from the cluster
// file. Each subcommand writes OUT/<host>/<file>.
func (a *app) renderCmd() *cobra.Command {
	return group("render", "Write kubeadm configurations, static pod manifests and systemd units for every host",
		a.renderKubeadmCmd(), a.renderAgentCmd(), a.renderEtcdCmd(), a.renderNodeLocalKubeconfigCmd())
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
		if err := pki.WriteFileAtomic(p, data, 0o644); err != nil {
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

// renderFilesCmd completes cmd as a subcommand that renders files from the
// cluster file (--config) into --out: files returns them by path under
// OUT. The flags, the checks and the writing are the same for every such
// subcommand; only what is rendered differs.
func (a *app) renderFilesCmd(cmd *cobra.Command, files func(c *config.Cluster) (map[string][]byte, error)) *cobra.Command {
	var cfgPath, out string
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(*cobra.Command, []string) error {
		if err := requireFlag("out", out); err != nil {
			return err
		}
		c, err := a.loadConfig(cfgPath)
		if err != nil {
			return err
		}
		fs, err := files(c)
		if err != nil {
			return err
		}
		return a.writeRendered(out, fs)
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&out, "out", "", "folder to write OUT/<host>/ into (required)")
	return cmd
}

// addPodAndUnit renders one host's static pod manifest and systemd unit
// into files, as HOST/manifests/MANIFEST and HOST/systemd/SERVICE: every
// component haplane renders per host comes as both, one per way to run it.
func addPodAndUnit(files map[string][]byte, host, manifest, service string, pod, unit func() ([]byte, error)) error {
	p, err := pod()
	if err != nil {
		return err
	}
	u, err := unit()
	if err != nil {
		return err
	}
	files[filepath.Join(host, "manifests", manifest)] = p
	files[filepath.Join(host, "systemd", service)] = u
	return nil
}

func (a *app) renderKubeadmCmd() *cobra.Command {
	return a.renderFilesCmd(&cobra.Command{
		Use:   "kubeadm",
		Short: "kubeadm v1beta4 configurations: init for the first node, join for the others, etcd for external hosts",
	}, func(c *config.Cluster) (map[string][]byte, error) {
		kf, err := render.Kubeadm(c)
		if err != nil {
			return nil, err
		}
		files := map[string][]byte{}
		for _, f := range kf {
			files[filepath.Join(f.Host, f.Name)] = f.Data
		}
		return files, nil
	})
}

func (a *app) renderAgentCmd() *cobra.Command {
	var o render.AgentOptions
	cmd := a.renderFilesCmd(&cobra.Command{
		Use:   "agent",
		Short: "The haplane agent's static pod manifest and systemd unit for every control-plane host, and for workers (worker/)",
	}, func(c *config.Cluster) (map[string][]byte, error) {
		files := map[string][]byte{}
		agent := func(host string, o render.AgentOptions) error {
			return addPodAndUnit(files, host, "haplane-agent.yaml", "haplane-agent.service",
				func() ([]byte, error) { return render.AgentPod(c, host, o) },
				func() ([]byte, error) { return render.AgentUnit(c, host, o) })
		}
		for _, n := range c.Nodes {
			if err := agent(n.Name, o); err != nil {
				return nil, err
			}
		}
		// One set for every worker: its node-local load balancer.
		wo := o
		wo.Worker = true
		if err := agent("worker", wo); err != nil {
			return nil, err
		}
		return files, nil
	})
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
			return pki.WriteFileAtomic(out, next, 0o600)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&in, "in", "", "kubeconfig to read (required)")
	cmd.Flags().StringVar(&out, "out", "-", `where to write it ("-": standard output; the same path as --in: in place, keeping FILE.bak)`)
	return cmd
}
