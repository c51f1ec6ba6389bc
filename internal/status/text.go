package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/lb"
	"github.com/haplane/haplane/internal/pki"
)

// WriteText is `haplane status` as text: the agent's document of v, the
// host's certificates, then the cluster-wide sections.
func WriteText(w io.Writer, v View) error {
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
				Engine *lb.EngineStatus `json:"engine"`
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
		if e := l.Engine; e != nil {
			configured := "0: one per CPU"
			if e.Configured != 0 {
				configured = strconv.Itoa(e.Configured)
			}
			fmt.Fprintf(w, "  engine: %d event loops (loadBalancer.loops %s), GOMAXPROCS %d\n", e.Loops, configured, e.GOMAXPROCS)
		}
	}
	if len(v.Certificates) > 0 {
		fmt.Fprintln(w, "certificates:")
		if err := pki.WriteCertTable(w, v.Certificates); err != nil {
			return err
		}
	}
	if c := s.Parts.Certs; c != nil {
		WriteRenewal(w, c, time.Now())
	}
	return WriteClusterSections(w, v.Etcd, v.Elections)
}

// WriteClusterSections prints the ETCD MEMBERS and ELECTIONS tables.
func WriteClusterSections(w io.Writer, ev *Etcd, el *Elections) error {
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
					term, index, db = strconv.FormatUint(m.RaftTerm, 10), strconv.FormatUint(m.RaftIndex, 10), etcdnode.BytesHuman(m.DBSize)
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

// WriteRenewal is the agent's certificate renewal in one line, and its
// problems on the next ones.
func WriteRenewal(w io.Writer, c *agent.CertsStatus, now time.Time) {
	next := "nothing held"
	if !c.NextDue.IsZero() {
		next = "next due " + c.NextDue.UTC().Format("Jan 02 15:04 MST")
		if d := c.NextDue.Sub(now); d > 0 {
			next += " (in " + pki.HumanDuration(d) + ")"
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
