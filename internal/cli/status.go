package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/status"
)

// statusAllView is `haplane status --all`: one row per node, then the
// cluster-wide sections.
type statusAllView struct {
	labView
	Etcd      *status.Etcd      `json:"etcd,omitempty"`
	Elections *status.Elections `json:"elections,omitempty"`
}

func (a *app) statusCmd() *cobra.Command {
	var apiAddr, apiSocket, pkiDir, cfgPath, kubeconfig string
	var raw, all bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this node's agent and the cluster at a glance: VIP, backends, etcd members, election holders, certificate expiry",
		Long: `Show this node's agent (VRRP state and priority, who holds the VIP, backend
health), this host's certificate expiry and, from the cluster file, every etcd
member (health, leader, raft term and index, database size) and the holders of
the kube-scheduler and kube-controller-manager Leases and of haplane elect
locks. Each cluster-wide section is bounded by a 2s timeout; a section whose
cluster file, certificates or kubeconfig are missing is skipped with a note.
With --all, one row per node of the cluster file instead of this node's agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all {
				c, err := a.loadConfig(cfgPath)
				if err != nil {
					return err
				}
				return a.statusAll(cmd.Context(), c, pkiDir, kubeconfig)
			}
			body, err := status.FetchAgent(cmd.Context(), apiAddr, apiSocket)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("status: no agent answers: %w", err)}
			}
			if raw {
				_, err := a.stdout.Write(body)
				return err
			}
			c, why := status.LoadCluster(cfgPath)
			return a.showStatus(cmd.Context(), body, c, why, pkiDir, kubeconfig)
		},
	}
	f := cmd.Flags()
	f.StringVar(&apiAddr, "api-addr", agent.DefaultAPIAddr, "the agent's local API")
	f.StringVar(&apiSocket, "api-socket", "", "the agent's unix socket (instead of --api-addr)")
	f.StringVar(&pkiDir, "pki-dir", "/etc/kubernetes/pki", `PKI folder: the expiry to show ("" to skip) and the etcd client certificate (etcd/healthcheck-client, else apiserver-etcd-client; "": the cluster file's certificates.dir)`)
	f.BoolVar(&raw, "raw", false, "print the agent's /status document as it is")
	f.BoolVar(&all, "all", false, "ask every control-plane node's agent (port 9445, with this host's cluster client certificate)")
	f.StringVarP(&cfgPath, "config", "c", "/etc/haplane/haplane.yaml", "cluster file: the etcd members, and the nodes for --all")
	f.StringVar(&kubeconfig, "kubeconfig", status.DefaultKubeconfig, `kubeconfig to read the Leases with (skipped when missing or "")`)
	return cmd
}

// showStatus prints this node's agent document body with the host's
// certificate expiry and the cluster-wide sections. c is nil when the
// cluster file did not load (why says why).
func (a *app) showStatus(ctx context.Context, body []byte, c *config.Cluster, why, pkiDir, kubeconfig string) error {
	v := status.View{Agent: body}
	if pkiDir != "" {
		v.Certificates = status.HostCertificates(pkiDir, time.Now())
	}
	v.Etcd, v.Elections = status.Cluster(ctx, c, why, pkiDir, kubeconfig)
	return a.print(v, func(w io.Writer) error { return status.WriteText(w, v) })
}

// statusAll asks every control-plane node's agent for its status over its
// peer port, presenting this host's apiserver-kubelet-client certificate
// (signed by the cluster CA) and verifying each agent's apiserver
// certificate.
func (a *app) statusAll(ctx context.Context, c *config.Cluster, pkiDir, kubeconfig string) error {
	roots, err := loadCertPool(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "apiserver-kubelet-client.crt"), filepath.Join(pkiDir, "apiserver-kubelet-client.key"))
	if err != nil {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("status --all needs a client certificate of the cluster CA: %w", err)}
	}
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}, DisableKeepAlives: true,
	}}
	endpoint := fmt.Sprintf("https://%s:%d", c.EndpointHost(), c.ControlPlaneEndpoint.Port)
	v := clusterView(endpoint, len(c.Nodes), func(i int) (labHostView, []byte, error) {
		n := c.Nodes[i]
		hv := labHostView{Host: n.Name, Address: n.Address, Role: "control-plane"}
		url := "https://" + net.JoinHostPort(n.Address, strconv.Itoa(join.DefaultPort)) + agent.PeerStatusPath
		body, err := status.Fetch(ctx, client, url)
		return hv, body, err
	})
	all := statusAllView{labView: v}
	all.Etcd, all.Elections = status.Cluster(ctx, c, "", pkiDir, kubeconfig)
	return a.print(all, func(w io.Writer) error {
		if err := printLabStatus(w, v); err != nil {
			return err
		}
		return status.WriteClusterSections(w, all.Etcd, all.Elections)
	})
}
