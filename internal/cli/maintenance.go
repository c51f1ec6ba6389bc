package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/status"
)

func (a *app) maintenanceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "maintenance",
		Short: "Take a control-plane node out of service for planned work, and put it back",
		Long: `maintenance start hands the VIP over (priority-0 advert) if the node holds
it (in vip.mode bgp: withdraws the node's route from its routers), takes its kube-apiserver out of every load balancer's pool and waits for its
sessions to drain, moves etcd leadership away if its member leads, and says when
kubelet or the apiserver may be stopped. maintenance stop puts the node back
once its apiserver (and etcd member) are healthy again. The state survives an
agent restart.

Entering is refused when it would leave the cluster without a ready
kube-apiserver or without etcd quorum; every refusal is one line on standard
error, exit code 2, and changes nothing.

Without --node, or with this host's node, the agent is reached on its unix
socket (root only). For another node, its agent's peer port is called with the
admin identity of --kubeconfig (admin.conf).`,
	}
	cmd.AddCommand(a.maintenanceActionCmd("start"), a.maintenanceActionCmd("stop"))
	return cmd
}

func (a *app) maintenanceActionCmd(action string) *cobra.Command {
	var node, sock, cfgPath, kubeconfig string
	var drain time.Duration
	var keepVIP bool
	cmd := &cobra.Command{
		Use:   action,
		Short: map[string]string{"start": "Enter maintenance", "stop": "Leave maintenance"}[action],
		Args:  cobra.NoArgs,
		Example: "  haplane maintenance " + action + "\n" +
			"  haplane maintenance " + action + " --node cp2 --kubeconfig /etc/kubernetes/admin.conf",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var opts *agent.MaintenanceOptions
			if action == "start" {
				opts = &agent.MaintenanceOptions{DrainTimeout: agent.Duration(drain), KeepVIP: keepVIP}
			}
			// The request waits for the steps: the drain, then a few
			// bounded seconds each.
			timeout := drain + time.Minute
			client, url, err := a.maintenanceTarget(cmd.Context(), node, sock, cfgPath, kubeconfig, action, timeout)
			if err != nil {
				return err
			}
			res, err := agent.RequestMaintenance(cmd.Context(), client, url, action, opts)
			if errors.As(err, new(agent.MaintenanceRefusedError)) {
				return &ExitError{Code: ExitUsage, Err: err}
			} else if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			if res.Refused != "" {
				if a.jsonOutput() {
					_ = a.print(res, nil)
				}
				return &ExitError{Code: ExitUsage, Err: fmt.Errorf("maintenance %s refused on %s: %s", action, res.Node, res.Refused)}
			}
			if err := a.print(res, func(w io.Writer) error { return printMaintenance(w, res) }); err != nil {
				return err
			}
			if !res.OK {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("maintenance %s on %s: a step failed", action, res.Node)}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&node, "node", "", "the node (default this host's agent)")
	fl.StringVar(&sock, "api-socket", "/var/lib/haplane/agent.sock", "this host's agent's unix socket")
	fl.StringVarP(&cfgPath, "config", "c", "/etc/haplane/haplane.yaml", "cluster file: where --node is")
	fl.StringVar(&kubeconfig, "kubeconfig", "/etc/kubernetes/admin.conf", "kubeconfig with the cluster's admin identity, for another node")
	if action == "start" {
		fl.DurationVar(&drain, "drain-timeout", 30*time.Second, "how long to wait for the apiserver's sessions to end")
		fl.BoolVar(&keepVIP, "keep-vip", false, "keep the VIP on this node (work on the control-plane components only, the agent stays up: an upgrade); without it the VIP is handed over")
	}
	return cmd
}

// maintenanceTarget picks the agent to ask: this host's over its unix
// socket when node is empty or the socket's agent is node, else node's
// peer port with the admin identity of kubeconfig.
func (a *app) maintenanceTarget(ctx context.Context, node, sock, cfgPath, kubeconfig, action string, timeout time.Duration) (*http.Client, string, error) {
	local := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	localURL := "http://agent/maintenance/" + action
	body, err := status.FetchAgent(ctx, "", sock)
	if node == "" {
		if err != nil {
			return nil, "", &ExitError{Code: ExitFailure, Err: fmt.Errorf("maintenance: this host's agent does not answer on %s: %w", sock, err)}
		}
		return local, localURL, nil
	}
	if err == nil {
		var st struct {
			Agent map[string]string `json:"agent"`
		}
		if json.Unmarshal(body, &st) == nil && st.Agent["node"] == node {
			return local, localURL, nil
		}
	}
	c, err := a.loadConfig(cfgPath)
	if err != nil {
		return nil, "", err
	}
	n, ok := c.NodeByName(node)
	if !ok {
		return nil, "", usageError{fmt.Errorf("--node: %q is not a control-plane node of %s", node, cfgPath)}
	}
	tc, err := agent.AdminTLS(kubeconfig)
	if err != nil {
		return nil, "", usageError{fmt.Errorf("maintenance --node %s: %w", node, err)}
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tc}}
	return client, "https://" + net.JoinHostPort(n.Address, strconv.Itoa(join.DefaultPort)) + agent.PeerMaintenancePath + action, nil
}

func printMaintenance(w io.Writer, r agent.MaintenanceResult) error {
	fmt.Fprintf(w, "maintenance %s on %s:\n", r.Action, r.Node)
	for _, s := range r.Steps {
		mark := "ok"
		if !s.OK {
			mark = "FAILED"
		}
		fmt.Fprintf(w, "  %-16s %-6s %8.0fms  %s\n", s.Name, mark, s.DurationMS, s.Detail)
	}
	return nil
}
