package cli

import (
	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/render"
)

func (a *app) renderEtcdCmd() *cobra.Command {
	var o render.EtcdOptions
	cmd := a.renderFilesCmd(&cobra.Command{
		Use:   "etcd",
		Short: "The etcd static pod manifest (as kubeadm's) and a systemd unit for every etcd member",
		Long: `Write OUT/<member>/manifests/etcd.yaml, for hosts where kubelet runs etcd as a
static pod, and OUT/<member>/systemd/haplane-etcd.service, for hosts where
systemd runs it with "haplane etcd run". Members are the control-plane nodes
(stacked topology) or etcd.nodes (external). Use one of the two per host.`,
	}, func(c *config.Cluster) (map[string][]byte, error) {
		files := map[string][]byte{}
		for _, m := range c.EtcdMembers() {
			if err := addPodAndUnit(files, m.Name, "etcd.yaml", "haplane-etcd.service",
				func() ([]byte, error) { return render.EtcdPod(c, m.Name, o) },
				func() ([]byte, error) { return render.EtcdUnit(c, m.Name, o) }); err != nil {
				return nil, err
			}
		}
		return files, nil
	})
	cmd.Flags().StringVar(&o.Image, "image", render.DefaultEtcdImage, "etcd container image")
	cmd.Flags().IntVar(&o.MetricsPort, "metrics-port", render.DefaultEtcdMetricsPort, "etcd metrics and health port on 127.0.0.1")
	cmd.Flags().StringVar(&o.Binary, "binary", render.DefaultAgentBinary, "haplane binary path for the systemd unit")
	return cmd
}
