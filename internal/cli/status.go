package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
)

// statusView is what `haplane status` shows: the agent's /status plus the
// certificate expiry of this host.
type statusView struct {
	Agent        json.RawMessage  `json:"agent"`
	Certificates []pki.CertStatus `json:"certificates,omitempty"`
}

func (a *app) statusCmd() *cobra.Command {
	var apiAddr, apiSocket, pkiDir, cfgPath string
	var raw, all bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this node's agent at a glance: VIP, backends, etcd, certificate expiry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all {
				return a.statusAll(cmd.Context(), cfgPath, pkiDir)
			}
			body, err := fetchAgentStatus(cmd.Context(), apiAddr, apiSocket)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("status: no agent answers: %w", err)}
			}
			if raw {
				_, err := a.stdout.Write(body)
				return err
			}
			v := statusView{Agent: body}
			if pkiDir != "" {
				if files, err := readHostTree(pkiDir); err == nil && len(files) > 0 {
					v.Certificates = pki.Check(files, nil, "", time.Now(), 30*24*time.Hour)
				}
			}
			return a.print(v, func(w io.Writer) error { return printStatus(w, v) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&apiAddr, "api-addr", agent.DefaultAPIAddr, "the agent's local API")
	f.StringVar(&apiSocket, "api-socket", "", "the agent's unix socket (instead of --api-addr)")
	f.StringVar(&pkiDir, "pki-dir", "/etc/kubernetes/pki", `PKI folder whose expiry to show ("" to skip)`)
	f.BoolVar(&raw, "raw", false, "print the agent's /status document as it is")
	f.BoolVar(&all, "all", false, "ask every control-plane node's agent (port 9445, with this host's cluster client certificate)")
	f.StringVarP(&cfgPath, "config", "c", "/etc/haplane/haplane.yaml", "cluster file (with --all)")
	return cmd
}

func fetchAgentStatus(ctx context.Context, addr, sock string) ([]byte, error) {
	tr := &http.Transport{}
	if sock != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}
		addr = "agent"
	}
	client := &http.Client{Timeout: 3 * time.Second, Transport: tr}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 4<<20))
}

// readHostTree reads a PKI folder and the kubeconfigs beside it, as
// pki.Check expects them.
func readHostTree(pkiDir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	tree, err := pki.ReadTree(pkiDir)
	if err != nil {
		return nil, err
	}
	for k, v := range tree {
		files["pki/"+k] = v
	}
	parent := filepath.Dir(filepath.Clean(pkiDir))
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".conf") {
			if data, err := os.ReadFile(filepath.Join(parent, e.Name())); err == nil {
				files[e.Name()] = data
			}
		}
	}
	return files, nil
}

func printStatus(w io.Writer, v statusView) error {
	var s struct {
		Agent map[string]string `json:"agent"`
		Ready bool              `json:"ready"`
		Parts struct {
			VIP *struct {
				State    string `json:"state"`
				Priority int    `json:"priority"`
				Master   string `json:"master"`
				Since    string `json:"since"`
			} `json:"vip"`
			LB *struct {
				Frontends []string `json:"frontends"`
				Backends  []struct {
					Addr   string `json:"addr"`
					Health string `json:"health"`
					Active int64  `json:"active"`
					Total  uint64 `json:"total"`
				} `json:"backends"`
			} `json:"lb"`
			Etcd *agent.EtcdStatus `json:"etcd"`
		} `json:"parts"`
	}
	if err := json.Unmarshal(v.Agent, &s); err != nil {
		return err
	}
	fmt.Fprintf(w, "node %s of cluster %s (agent %s, ready %v)\n", s.Agent["node"], s.Agent["cluster"], s.Agent["version"], s.Ready)
	if vp := s.Parts.VIP; vp != nil {
		holder := vp.Master
		if vp.State == "master" {
			holder = "this node"
		}
		fmt.Fprintf(w, "VIP:  %s, priority %d, held by %s (since %s)\n", vp.State, vp.Priority, holder, vp.Since)
	}
	if e := s.Parts.Etcd; e != nil {
		fmt.Fprintf(w, "etcd: member %s %s, ready %v\n", e.Member, e.Client, e.Ready)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if l := s.Parts.LB; l != nil {
		fmt.Fprintf(w, "load balancer on %s:\n", strings.Join(l.Frontends, ", "))
		fmt.Fprintln(tw, "  BACKEND\tHEALTH\tACTIVE\tTOTAL")
		for _, b := range l.Backends {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\n", b.Addr, b.Health, b.Active, b.Total)
		}
		tw.Flush()
	}
	if len(v.Certificates) > 0 {
		fmt.Fprintln(w, "certificates:")
		return printCertTable(w, v.Certificates)
	}
	return nil
}

// statusAll asks every control-plane node's agent for its status over its
// peer port, presenting this host's apiserver-kubelet-client certificate
// (signed by the cluster CA) and verifying each agent's apiserver
// certificate.
func (a *app) statusAll(ctx context.Context, cfgPath, pkiDir string) error {
	c, err := a.loadConfig(cfgPath)
	if err != nil {
		return err
	}
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
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return hv, nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return hv, nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return hv, nil, fmt.Errorf("%s", resp.Status)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		return hv, body, err
	})
	return a.print(v, func(w io.Writer) error { return printLabStatus(w, v) })
}
