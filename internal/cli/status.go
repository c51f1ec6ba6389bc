package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/elect"
	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
)

// statusView is what `haplane status` shows: the agent's /status, the
// certificate expiry of this host, and the cluster's etcd members and
// election holders.
type statusView struct {
	Agent        json.RawMessage  `json:"agent"`
	Certificates []pki.CertStatus `json:"certificates,omitempty"`
	Etcd         *statusEtcd      `json:"etcd,omitempty"`
	Elections    *statusElections `json:"elections,omitempty"`
}

// statusAllView is `haplane status --all`: one row per node, then the
// cluster-wide sections.
type statusAllView struct {
	labView
	Etcd      *statusEtcd      `json:"etcd,omitempty"`
	Elections *statusElections `json:"elections,omitempty"`
}

// statusTimeout bounds each cluster-wide section of `haplane status`, so
// the screen stays fast when etcd or the API server is down.
const statusTimeout = 2 * time.Second

// defaultKubeconfig is where kubeadm leaves the admin kubeconfig.
const defaultKubeconfig = "/etc/kubernetes/admin.conf"

// statusLeases are the leader-election Leases `haplane status` shows.
var statusLeases = []string{"kube-system/kube-scheduler", "kube-system/kube-controller-manager"}

// statusEtcd is the etcd section: every member as `haplane etcd status`
// probes it. Report is nil when the section was skipped.
type statusEtcd struct {
	// Skipped says why the members were not asked.
	Skipped string `json:"skipped,omitempty"`
	// Leader names the member that reports itself leader ("" when none).
	Leader string `json:"leader,omitempty"`
	*etcdnode.Report
}

// statusElection is the holder of one election.
type statusElection struct {
	// Backend is "kubernetes" (a coordination.k8s.io Lease) or "etcd" (a
	// haplane elect lock).
	Backend string `json:"backend"`
	// Name is the Lease as namespace/name, or the lock.
	Name string `json:"name"`
	// Holder is the leader's identity ("" when nobody holds it).
	Holder string `json:"holder"`
	// Token is the fencing token: the Lease's leaseTransitions, or the
	// leader key's create revision.
	Token int64 `json:"token"`
	// Renewed is a Lease's renewTime; Expired says it is older than the
	// Lease's duration (the holder is gone or cannot reach the API).
	Renewed *time.Time `json:"renewed,omitempty"`
	Expired bool       `json:"expired,omitempty"`
	// Candidates counts an etcd lock's campaigning keys, the leader's
	// included.
	Candidates int    `json:"candidates,omitempty"`
	Error      string `json:"error,omitempty"`
}

// statusElections is the elections section.
type statusElections struct {
	Holders []statusElection `json:"holders"`
	// Notes says, one line each, which backend was skipped or failed.
	Notes []string `json:"notes,omitempty"`
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
			body, err := fetchAgentStatus(cmd.Context(), apiAddr, apiSocket)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("status: no agent answers: %w", err)}
			}
			if raw {
				_, err := a.stdout.Write(body)
				return err
			}
			c, why := statusConfig(cfgPath)
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
	f.StringVar(&kubeconfig, "kubeconfig", defaultKubeconfig, `kubeconfig to read the Leases with (skipped when missing or "")`)
	return cmd
}

// showStatus prints this node's agent document body with the host's
// certificate expiry and the cluster-wide sections. c is nil when the
// cluster file did not load (why says why).
func (a *app) showStatus(ctx context.Context, body []byte, c *config.Cluster, why, pkiDir, kubeconfig string) error {
	v := statusView{Agent: body}
	if pkiDir != "" {
		if files, err := readHostTree(pkiDir); err == nil && len(files) > 0 {
			v.Certificates = pki.Check(files, nil, "", time.Now(), 30*24*time.Hour)
		}
	}
	v.Etcd, v.Elections = clusterSections(ctx, c, why, pkiDir, kubeconfig)
	return a.print(v, func(w io.Writer) error { return printStatus(w, v) })
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
	all := statusAllView{labView: v}
	all.Etcd, all.Elections = clusterSections(ctx, c, "", pkiDir, kubeconfig)
	return a.print(all, func(w io.Writer) error {
		if err := printLabStatus(w, v); err != nil {
			return err
		}
		return printClusterSections(w, all.Etcd, all.Elections)
	})
}

// statusConfig loads the cluster file for the cluster-wide sections; when
// it does not load, it returns nil and why, in one line.
func statusConfig(path string) (*config.Cluster, string) {
	if path == "" {
		return nil, "no cluster file (--config)"
	}
	if !exists(path) {
		return nil, fmt.Sprintf("no cluster file %s (--config)", path)
	}
	c, err := config.Load(path)
	if err != nil {
		msg, _, more := strings.Cut(err.Error(), "\n")
		if more {
			msg += "; see haplane validate"
		}
		return nil, fmt.Sprintf("cluster file %s does not load: %s", path, msg)
	}
	return c, ""
}

// clusterSections gathers the etcd members and the election holders, all
// at once, each within statusTimeout. c is nil when the cluster file did
// not load (why says why): then only the Leases are read. The etcd client
// certificate is the one `haplane etcd` picks under pkiDir (else the
// cluster file's certificates.dir).
func clusterSections(ctx context.Context, c *config.Cluster, why, pkiDir, kubeconfig string) (*statusEtcd, *statusElections) {
	ev, el := &statusEtcd{Skipped: why}, &statusElections{Holders: []statusElection{}}
	var tc *tls.Config
	var targets []etcdnode.Target
	if c != nil {
		_, targets = etcdnode.ClusterPeers(c)
		var err error
		if tc, err = (&etcdFlags{pkiDir: pkiDir}).clientTLS(c).Config(); err != nil {
			ev.Skipped = err.Error()
		}
	}
	var etcdHolders, leases []statusElection
	var etcdNote, leaseNote string
	var wg sync.WaitGroup
	if ev.Skipped == "" {
		wg.Go(func() {
			p := etcdnode.NewProber(tc, statusTimeout, 0)
			defer p.Close()
			rep := p.Probe(ctx, targets)
			ev.Report = &rep
			for _, m := range rep.Members {
				if m.Leader {
					ev.Leader = strings.TrimPrefix(ev.Leader+"+"+m.Name, "+")
				}
			}
		})
		wg.Go(func() { etcdHolders, etcdNote = etcdElections(ctx, targets, tc) })
	} else {
		etcdNote = "etcd locks: skipped: " + ev.Skipped
	}
	wg.Go(func() { leases, leaseNote = leaseHolders(ctx, kubeconfig) })
	wg.Wait()
	el.Holders = append(append(el.Holders, leases...), etcdHolders...)
	for _, n := range []string{leaseNote, etcdNote} {
		if n != "" {
			el.Notes = append(el.Notes, n)
		}
	}
	return ev, el
}

// etcdElections lists the holders of haplane elect locks.
func etcdElections(ctx context.Context, targets []etcdnode.Target, tc *tls.Config) ([]statusElection, string) {
	var eps []string
	for _, t := range targets {
		eps = append(eps, t.Endpoint)
	}
	cli, err := etcdnode.NewClient(eps, tc, statusTimeout)
	if err != nil {
		return nil, "etcd locks: " + err.Error()
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	hs, err := elect.Holders(ctx, cli)
	if err != nil {
		return nil, "etcd locks: " + err.Error()
	}
	var out []statusElection
	for _, h := range hs {
		out = append(out, statusElection{Backend: "etcd", Name: h.Lock, Holder: h.Identity, Token: h.Token, Candidates: h.Candidates})
	}
	return out, ""
}

// leaseHolders reads the kube-scheduler and kube-controller-manager
// Leases.
func leaseHolders(ctx context.Context, kubeconfig string) ([]statusElection, string) {
	if kubeconfig == "" {
		return nil, "kubernetes leases: skipped: no --kubeconfig"
	}
	if !exists(kubeconfig) {
		return nil, fmt.Sprintf("kubernetes leases: skipped: no kubeconfig %s (--kubeconfig)", kubeconfig)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, "kubernetes leases: " + err.Error()
	}
	rc.Timeout = statusTimeout
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, "kubernetes leases: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	var out []statusElection
	for _, nn := range statusLeases {
		ns, name, _ := strings.Cut(nn, "/")
		e := statusElection{Backend: "kubernetes", Name: nn}
		l, err := cs.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			e.Error = "no such Lease"
		case err != nil:
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // the URL says nothing the row does not
			}
			e.Error = err.Error()
		default:
			if l.Spec.HolderIdentity != nil {
				e.Holder = *l.Spec.HolderIdentity
			}
			if l.Spec.LeaseTransitions != nil {
				e.Token = int64(*l.Spec.LeaseTransitions)
			}
			if r := l.Spec.RenewTime; r != nil {
				t := r.Time
				e.Renewed = &t
				if d := l.Spec.LeaseDurationSeconds; d != nil {
					e.Expired = time.Since(t) > time.Duration(*d)*time.Second
				}
			}
		}
		out = append(out, e)
	}
	return out, ""
}

// printClusterSections prints the ETCD MEMBERS and ELECTIONS tables.
func printClusterSections(w io.Writer, ev *statusEtcd, el *statusElections) error {
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
