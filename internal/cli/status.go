package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
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
	return a.print(v, func(w io.Writer) error { return printStatus(w, v) })
}

func printStatus(w io.Writer, v status.View) error {
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
				Panic     bool     `json:"panic"`
				Backends  []struct {
					Addr   string `json:"addr"`
					Health string `json:"health"`
					Active int64  `json:"active"`
					Total  uint64 `json:"total"`
				} `json:"backends"`
			} `json:"lb"`
			Etcd  *agent.EtcdStatus  `json:"etcd"`
			Certs *agent.CertsStatus `json:"certs"`
		} `json:"parts"`
		Maintenance *agent.MaintenanceState `json:"maintenance"`
	}
	if err := json.Unmarshal(v.Agent, &s); err != nil {
		return err
	}
	fmt.Fprintf(w, "node %s of cluster %s (agent %s, ready %v)\n", s.Agent["node"], s.Agent["cluster"], s.Agent["version"], s.Ready)
	if m := s.Maintenance; m != nil && m.Active {
		fmt.Fprintf(w, "MAINTENANCE: since %s (out of the VIP and every load balancer pool; haplane maintenance stop ends it)\n", m.Since.Format(time.RFC3339))
	}
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
		panicNote := ""
		if l.Panic {
			panicNote = " (panic: no backend ready, new sessions go to the live ones)"
		}
		fmt.Fprintf(w, "load balancer on %s%s:\n", strings.Join(l.Frontends, ", "), panicNote)
		fmt.Fprintln(tw, "  BACKEND\tHEALTH\tACTIVE\tTOTAL")
		for _, b := range l.Backends {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\n", b.Addr, b.Health, b.Active, b.Total)
		}
		tw.Flush()
	}
	if len(v.Certificates) > 0 {
		fmt.Fprintln(w, "certificates:")
		if err := printCertTable(w, v.Certificates); err != nil {
			return err
		}
	}
	if c := s.Parts.Certs; c != nil {
		printRenewal(w, c, time.Now())
	}
	return printClusterSections(w, v.Etcd, v.Elections)
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
		return printClusterSections(w, all.Etcd, all.Elections)
	})
}

// printClusterSections prints the ETCD MEMBERS and ELECTIONS tables.
func printClusterSections(w io.Writer, ev *status.Etcd, el *status.Elections) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if ev != nil {
		if ev.Report == nil {
			fmt.Fprintf(w, "ETCD MEMBERS: skipped: %s\n", ev.Skipped)
		} else {
			leader := ev.Leader
			if leader == "" {
				leader = "none"
			}
			fmt.Fprintf(w, "ETCD MEMBERS (leader %s; %s, %d of %d voting members healthy)\n", leader, ev.Verdict, ev.HealthyVoters, ev.Voters)
			fmt.Fprintln(tw, "  NAME\tENDPOINT\tHEALTHY\tLEADER\tLEARNER\tTERM\tINDEX\tDB SIZE\tERROR")
			for _, m := range ev.Members {
				healthy, term, index, db := strconv.FormatBool(m.Healthy), "-", "-", "-"
				if m.Reachable {
					term, index, db = strconv.FormatUint(m.RaftTerm, 10), strconv.FormatUint(m.RaftIndex, 10), bytesHuman(m.DBSize)
				} else {
					healthy = "unreachable"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%v\t%v\t%s\t%s\t%s\t%s\n", m.Name, m.Endpoint, healthy, m.Leader, m.Learner,
					term, index, db, m.Error)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	if el != nil {
		fmt.Fprintln(w, "ELECTIONS")
		if len(el.Holders) > 0 {
			fmt.Fprintln(tw, "  BACKEND\tNAME\tHOLDER\tTOKEN\tRENEWED\tNOTE")
			for _, e := range el.Holders {
				holder, token, renewed, note := e.Holder, strconv.FormatInt(e.Token, 10), "-", e.Error
				if holder == "" {
					holder, token = "-", "-"
				}
				if e.Renewed != nil {
					renewed = time.Since(*e.Renewed).Round(time.Second).String() + " ago"
				}
				if e.Expired {
					note = "expired"
				}
				if e.Candidates > 1 {
					note = fmt.Sprintf("%d candidates waiting", e.Candidates-1)
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", e.Backend, e.Name, holder, token, renewed, note)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		for _, n := range el.Notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
	return nil
}

// printRenewal is the agent's certificate renewal in one line, and its
// problems on the next ones.
func printRenewal(w io.Writer, c *agent.CertsStatus, now time.Time) {
	next := "nothing held"
	if !c.NextDue.IsZero() {
		next = "next due " + c.NextDue.UTC().Format("Jan 02 15:04 MST")
		if d := c.NextDue.Sub(now); d > 0 {
			next += " (in " + humanDuration(d) + ")"
		} else {
			next += " (now)"
		}
	}
	last := "never"
	if !c.LastRenewal.IsZero() {
		last = c.LastRenewal.UTC().Format("Jan 02 15:04 MST") + " (" + strings.Join(c.Renewed, ", ") + ")"
	}
	fmt.Fprintf(w, "renewal: by the agent, %s; last renewal %s\n", next, last)
	if len(c.PendingRestarts) > 0 {
		fmt.Fprintf(w, "  restart needed: %s read their renewed certificate at start only\n", strings.Join(c.PendingRestarts, ", "))
	}
	if c.LastError != "" {
		fmt.Fprintf(w, "  last check failed: %s\n", c.LastError)
	}
}
