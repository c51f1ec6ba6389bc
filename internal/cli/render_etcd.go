package cli

import (
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/render"
)

func (a *app) renderEtcdCmd() *cobra.Command {
	var cfgPath, out string
	var o render.EtcdOptions
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "The etcd static pod manifest (as kubeadm's) and a systemd unit for every etcd member",
		Long: `Write OUT/<member>/manifests/etcd.yaml, for hosts where kubelet runs etcd as a
static pod, and OUT/<member>/systemd/haplane-etcd.service, for hosts where
systemd runs it with "haplane etcd run". Members are the control-plane nodes
(stacked topology) or etcd.nodes (external). Use one of the two per host.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := requireFlag("out", out); err != nil {
				return err
			}
			c, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			files := map[string][]byte{}
			for _, m := range c.EtcdMembers() {
				pod, err := render.EtcdPod(c, m.Name, o)
				if err != nil {
					return err
				}
				unit, err := render.EtcdUnit(c, m.Name, o)
				if err != nil {
					return err
				}
				files[filepath.Join(m.Name, "manifests", "etcd.yaml")] = pod
				files[filepath.Join(m.Name, "systemd", "haplane-etcd.service")] = unit
			}
			return a.writeRendered(out, files)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&out, "out", "", "folder to write OUT/<host>/ into (required)")
	cmd.Flags().StringVar(&o.Image, "image", render.DefaultEtcdImage, "etcd container image")
	cmd.Flags().IntVar(&o.MetricsPort, "metrics-port", render.DefaultEtcdMetricsPort, "etcd metrics and health port on 127.0.0.1")
	cmd.Flags().StringVar(&o.Binary, "binary", render.DefaultAgentBinary, "haplane binary path for the systemd unit")
	return cmd
}
