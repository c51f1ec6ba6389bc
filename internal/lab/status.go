package lab

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haplane/haplane/internal/bgp"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
)

// HostView is one host in `lab status`.
type HostView struct {
	Host     string          `json:"host"`
	Address  string          `json:"address"`
	Role     string          `json:"role"`
	Agent    string          `json:"agent"` // up, down, classic
	VRRP     json.RawMessage `json:"vrrp,omitempty"`
	State    string          `json:"vrrpState,omitempty"`
	Priority int             `json:"priority,omitempty"`
	HoldsVIP bool            `json:"holdsVIP"`
	Backends string          `json:"backendsUp,omitempty"`
	Etcd     string          `json:"etcd,omitempty"`
	// BGP is the agent's announcer in vip.mode bgp (State and Priority
	// are VRRP's, empty then).
	BGP *bgp.State `json:"bgp,omitempty"`
}

// View is the one-screen view of a lab: who holds the VIP, every host.
type View struct {
	Endpoint string `json:"endpoint"`
	// VIPMode is vrrp or bgp; in bgp every announcing node holds the VIP.
	VIPMode  string     `json:"vipMode,omitempty"`
	VIPOwner string     `json:"vipHolder"`
	Hosts    []HostView `json:"hosts"`
	Ready    string     `json:"readyAfter,omitempty"`
}

// Status observes the lab through its stack.
func (s *State) Status() View { return StackOf(s).Status(s) }

// serverHosts are the hosts that serve the cluster: all but the client.
func (s *State) serverHosts() []HostState {
	var hosts []HostState
	for _, h := range s.Hosts {
		if h.Role != "client" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// etcdStatus is one `haplane etcd status` asked from the client host, as
// an operator would. It exits non-zero without fault tolerance; the
// document still says who is healthy and who leads.
func (s *State) etcdStatus() (etcdnode.Report, error) {
	cmd := (&Host{NS: s.Prefix + "-client"}).Command(s.Binary, "-o", "json", "etcd", "status",
		"--config", s.ClusterFile, "--pki-dir", filepath.Join(s.HostDir("cp1"), "pki"))
	out, _ := cmd.Output()
	var rep etcdnode.Report
	err := json.Unmarshal(out, &rep)
	return rep, err
}

// EtcdLeader asks the etcd cluster, from the client host, which member
// leads.
func (s *State) EtcdLeader() (string, error) {
	rep, err := s.etcdStatus()
	if err != nil {
		return "", fmt.Errorf("etcd status: %w", err)
	}
	for _, m := range rep.Members {
		if m.Leader {
			return m.Name, nil
		}
	}
	return "", errors.New("etcd status: no member leads")
}

// fillEtcd fills the etcd column of the hosts whose member runs as its
// own process (no agent reports it) from etcd status: ready, ready
// (leader), learner, unhealthy or down.
func (s *State) fillEtcd(v *View) {
	members := s.EtcdHosts()
	need := false
	for _, h := range v.Hosts {
		need = need || h.Etcd == "" && slices.Contains(members, h.Host)
	}
	if !need {
		return
	}
	rep, err := s.etcdStatus()
	if err != nil {
		return
	}
	state := map[string]string{}
	for _, m := range rep.Members {
		switch {
		case m.Healthy && m.Leader:
			state[m.Name] = "ready (leader)"
		case m.Healthy:
			state[m.Name] = "ready"
		case m.Learner && m.Serving:
			state[m.Name] = "learner"
		case m.Reachable:
			state[m.Name] = "unhealthy"
		default:
			state[m.Name] = "down"
		}
	}
	for i, h := range v.Hosts {
		if h.Etcd == "" && slices.Contains(members, h.Host) {
			v.Hosts[i].Etcd = cmp.Or(state[h.Host], "down")
		}
	}
}

// ClusterView builds the one-screen view of n hosts from each one's agent
// /status document (fetch returns the host and the document, or an error
// when its agent does not answer).
// errNoAgent is a fetch's answer for a host that runs no agent by design
// (an external etcd host with its member alone, `haplane etcd run`): its
// AGENT column shows "-", and only its member counts for Settled.
var errNoAgent = errors.New("lab: this host runs no agent")

func ClusterView(endpoint string, n int, fetch func(i int) (HostView, []byte, error)) View {
	v := View{Endpoint: endpoint}
	for i := range n {
		hv, out, err := fetch(i)
		hv.Agent = "down"
		if errors.Is(err, errNoAgent) {
			hv.Agent = "-"
		}
		var s struct {
			Parts struct {
				VIP *struct {
					State    string `json:"state"`
					Priority int    `json:"priority"`
				} `json:"vip"`
				LB *struct {
					Backends []struct {
						Health string `json:"health"`
					} `json:"backends"`
				} `json:"lb"`
				Etcd *struct {
					Ready bool `json:"ready"`
				} `json:"etcd"`
			} `json:"parts"`
		}
		if err == nil && json.Unmarshal(out, &s) == nil {
			hv.Agent = "up"
			if vp := s.Parts.VIP; vp != nil {
				hv.State, hv.Priority = vp.State, vp.Priority
				hv.HoldsVIP = vp.State == "master"
				if hv.HoldsVIP {
					if v.VIPOwner != "" {
						v.VIPOwner += "+"
					}
					v.VIPOwner += hv.Host
				}
			}
			if l := s.Parts.LB; l != nil {
				up, live := 0, 0
				for _, b := range l.Backends {
					switch b.Health {
					case "up":
						up++
					case "live":
						live++
					}
				}
				hv.Backends = fmt.Sprintf("%d/%d", up, len(l.Backends))
				if up == 0 && live > 0 {
					// Panic routing: clients go to the live ones.
					hv.Backends += fmt.Sprintf(" (panic: %d live)", live)
				}
			}
			if e := s.Parts.Etcd; e != nil {
				hv.Etcd = map[bool]string{true: "ready", false: "starting"}[e.Ready]
			}
		}
		v.Hosts = append(v.Hosts, hv)
	}
	if v.VIPOwner == "" {
		v.VIPOwner = "nobody"
	}
	return v
}

// Settled reports one VIP holder, every agent up, every backend up and
// every etcd member ready, and the VIP on the host of the highest
// priority: the lab's cluster file leaves preemption on, so a lower
// holder is a moment in an election that is still going (a host whose
// apiserver came up last takes the VIP back an advertisement later).
func (v View) Settled() bool {
	if v.VIPOwner == "nobody" || strings.Contains(v.VIPOwner, "+") {
		return false
	}
	top := 0
	for _, h := range v.Hosts {
		if h.Agent == "up" && h.State != "" && h.Priority > top {
			top = h.Priority
		}
	}
	for _, h := range v.Hosts {
		if h.HoldsVIP && h.Agent == "up" && h.Priority < top {
			return false
		}
	}
	for _, h := range v.Hosts {
		if h.Agent == "classic" || h.Agent == "-" {
			if h.Etcd != "" && !strings.HasPrefix(h.Etcd, "ready") {
				return false
			}
			continue // keepalived and haproxy (or a lone etcd member) say nothing of their own
		}
		if h.Agent != "up" || (h.Etcd != "" && !strings.HasPrefix(h.Etcd, "ready")) {
			return false
		}
		if up, total, ok := strings.Cut(h.Backends, "/"); ok && up != total {
			return false
		}
	}
	return true
}

// WaitSteady lets the health checks and tracked priorities settle, for
// up to d, so that lab up shows the steady state rather than the first
// seconds: the stack's Steady, with the VIP's holder put for its Hold
// (two keepalived backups can time out together and both take the VIP
// for a moment). It returns the last view, steady or not.
func (s *State) WaitSteady(d time.Duration) View {
	stack := StackOf(s)
	c, err := config.Load(s.ClusterFile)
	if err != nil {
		c = nil
	}
	view := stack.Status(s)
	holder, since := view.VIPOwner, time.Now()
	for settle := time.Now().Add(d); time.Now().Before(settle) && !(stack.Steady(c, view) && time.Since(since) >= stack.Hold()); {
		time.Sleep(300 * time.Millisecond)
		view = stack.Status(s)
		if view.VIPOwner != holder {
			holder, since = view.VIPOwner, time.Now()
		}
	}
	return view
}

// WriteStatus prints the view as lab status shows it.
func WriteStatus(w io.Writer, v View) error {
	fmt.Fprintf(w, "VIP %s held by: %s\n", v.Endpoint, v.VIPOwner)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	bgpMode := v.VIPMode == VIPModeBGP
	if bgpMode {
		// Every node announces: the route's state and the sessions
		// behind it stand where VRRP's state and priority are.
		fmt.Fprintln(tw, "HOST\tADDRESS\tROLE\tAGENT\tBGP ROUTE\tPEERS\tVIP\tBACKENDS UP\tETCD")
	} else {
		fmt.Fprintln(tw, "HOST\tADDRESS\tROLE\tAGENT\tVRRP\tPRIORITY\tVIP\tBACKENDS UP\tETCD")
	}
	dash := func(s string) string { return cmp.Or(s, "-") }
	for _, h := range v.Hosts {
		vip := ""
		if h.HoldsVIP {
			vip = "*"
		}
		state, prio := dash(h.State), "-"
		if h.Priority != 0 {
			prio = strconv.Itoa(h.Priority)
		}
		if bgpMode {
			state, prio = bgpRoute(h.BGP), bgpPeers(h.BGP)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, h.Address, h.Role, h.Agent, state, prio, vip, dash(h.Backends), dash(h.Etcd))
	}
	return tw.Flush()
}

// bgpRoute is the BGP ROUTE column: announced, or withdrawn and why.
func bgpRoute(st *bgp.State) string {
	switch {
	case st == nil:
		return "-"
	case st.Announced && st.Panic:
		return "announced (panic)"
	case st.Announced:
		return "announced"
	case st.Stopping:
		return "withdrawn (stopping)"
	case st.Paused:
		return "withdrawn (maintenance)"
	case !st.Healthy:
		return "withdrawn (unhealthy)"
	case st.Panic:
		return "withdrawn (panic: waits for a ready apiserver)"
	}
	return "withdrawn"
}

// bgpPeers is the PEERS column: how many sessions are established, and
// how many BFD sessions are up when there are any, e.g. "1/1 up, BFD 1/1".
func bgpPeers(st *bgp.State) string {
	if st == nil || len(st.Peers) == 0 {
		return "-"
	}
	up, bfd, bfdUp := 0, 0, 0
	for _, p := range st.Peers {
		if p.State == "established" {
			up++
		}
		if p.BFD != "" {
			bfd++
			if p.BFD == "up" {
				bfdUp++
			}
		}
	}
	out := fmt.Sprintf("%d/%d up", up, len(st.Peers))
	if bfd > 0 {
		out += fmt.Sprintf(", BFD %d/%d", bfdUp, bfd)
	}
	return out
}

// WriteUp prints what lab up reports once the lab is up: the view and
// what to try next.
func WriteUp(w io.Writer, st *State, v View) error {
	fmt.Fprintf(w, "lab is up in %s: endpoint %s (through the VIP), cluster file %s\n\n", v.Ready, st.Endpoint, st.ClusterFile)
	if err := WriteStatus(w, v); err != nil {
		return err
	}
	fmt.Fprintf(w, "\ntry:  haplane lab status    |  ip netns exec %s-client curl --cacert %s %s/readyz\n",
		st.Prefix, filepath.Join(st.HostDir("cp1"), "pki", "ca.crt"), st.Endpoint)
	if st.Backend == BackendKube {
		fmt.Fprintf(w, "      haplane lab kubectl get --raw /readyz   |  haplane lab kubectl get leases -n kube-system\n")
	}
	fmt.Fprintf(w, "      haplane lab chaos --scenario all        |  haplane lab down\n")
	return nil
}
