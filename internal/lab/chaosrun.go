package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/netns"
)

// ChaosEnv is what the chaos driver needs from its caller.
type ChaosEnv struct {
	State *State
	// Settled reports whether the lab is back to its steady state (one
	// VIP holder, every agent, backend and etcd member up), so the next
	// scenario starts from a healthy cluster.
	Settled func() bool
	// EtcdLeader returns the host of the etcd leader.
	EtcdLeader func() (string, error)
	// Holder says who holds the VIP: a host, "nobody", or "a+b" while two
	// claim it (default State.VIPHolder, from the addresses on the hosts).
	Holder func() string
	Out    io.Writer
}

// scenario is one fault: apply breaks something at the fault instant and
// returns what heals it after window.
type scenario struct {
	name, desc string
	kubeOnly   bool
	// needsEtcdProc: the scenario stops etcd alone, so etcd must not live
	// in the agent of a control-plane host.
	needsEtcdProc bool
	// vipStays: the VIP must stay on the host that held it at the start,
	// alone, for the whole scenario (a fault every node shares).
	vipStays bool
	// vipLeavesWithin: from this long after the fault on, only one host,
	// not the target, may hold the VIP (a dead holder's copy expires).
	vipLeavesWithin time.Duration
	probePath       string        // default /readyz
	window          time.Duration // fault to heal
	post            time.Duration // observed after the heal (default 3s)
	maxGap          time.Duration // the client's longest gap that passes
	// alsoPath is probed too (same pace, summarized apart) and passes
	// with a longest gap of at most alsoMaxGap.
	alsoPath   string
	alsoMaxGap time.Duration
	// localMaxGap bounds the longest gap seen through the client host's
	// node-local load balancer, when the lab runs one (0: reported only).
	localMaxGap time.Duration
	// noFailures: every probe (the main path and alsoPath) must succeed.
	noFailures bool
	// maxGapBGP replaces maxGap in vip.mode bgp (0: maxGap).
	maxGapBGP time.Duration
	// needsUpgrade: the scenario runs only with a release to upgrade to
	// (ChaosOptions.UpgradeBin).
	needsUpgrade bool
	// needsKubelet: the scenario runs only in a kubelet lab.
	needsKubelet bool
	// podWatchMax, in a kubelet lab, bounds how late the worker's watcher
	// pod may see an acknowledged write (none may be missed) and has the
	// worker stay Ready; 0: the pod's watch is reported only.
	podWatchMax time.Duration
	// check, when set, is asked after the fault and the heal: a reason
	// to fail ("" passes).
	check func(r *chaosRun) string
	lease string // the leader Lease whose takeover is measured
	apply func(r *chaosRun) (target string, heal func() error, err error)
}

// Scenarios lists the names `lab chaos --scenario` takes, in run order.
func Scenarios() []string {
	var out []string
	for _, s := range scenarios() {
		out = append(out, s.name)
	}
	return out
}

func scenarios() []scenario {
	// down takes proc's processes down, with kill -9 or (graceful) as
	// systemd stops a unit, and restarts them at the heal.
	down := func(graceful bool, proc func(r *chaosRun) (string, string, error)) func(r *chaosRun) (string, func() error, error) {
		return func(r *chaosRun) (string, func() error, error) {
			host, names, err := proc(r)
			if err != nil {
				return "", nil, err
			}
			// Several names (the classic stack's keepalived and haproxy)
			// die together, as the one agent process does.
			procs := strings.Split(names, "+")
			verb := "kill -9 "
			if graceful {
				verb = "SIGTERM "
			}
			r.event(verb + names + " on " + host)
			for _, name := range procs {
				stop := func() error { return r.st.Signal(host, name, syscall.SIGKILL) }
				if graceful {
					stop = func() error { return r.stopProc(host, name) }
				}
				if err := stop(); err != nil {
					return host, nil, err
				}
			}
			if graceful {
				r.event(names + " on " + host + " exited")
			}
			return host, func() error {
				r.event("restart " + names + " on " + host)
				for _, name := range procs {
					r.waitExit(host, name)
					if _, err := r.st.Restart(host, name); err != nil {
						return err
					}
				}
				return nil
			}, nil
		}
	}
	kill := func(proc func(r *chaosRun) (string, string, error)) func(r *chaosRun) (string, func() error, error) {
		return down(false, proc)
	}
	holderAgent := func(r *chaosRun) (string, string, error) {
		h, err := r.holder()
		return h, strings.Join(r.st.VIPLBProcs(), "+"), err
	}
	holderAPI := func(r *chaosRun) (string, string, error) { h, err := r.holder(); return h, r.st.APIServerProc(), err }
	etcdOf := func(leader bool) func(r *chaosRun) (string, string, error) {
		return func(r *chaosRun) (string, string, error) {
			l, err := r.env.EtcdLeader()
			if err != nil {
				return "", "", err
			}
			if leader {
				return l, r.st.EtcdProc(l), nil
			}
			h, err := r.holder()
			if err != nil {
				return "", "", err
			}
			for _, m := range r.st.EtcdHosts() {
				if m != l && m != h {
					return m, r.st.EtcdProc(m), nil
				}
			}
			return "", "", errors.New("no etcd member that is neither the leader nor on the VIP holder")
		}
	}
	leaseHolder := func(lease string) func(r *chaosRun) (string, string, error) {
		return func(r *chaosRun) (string, string, error) {
			h, err := r.leaseHolder(lease)
			return h, lease, err
		}
	}
	return []scenario{
		{name: "vip-holder-kill", desc: "kill -9 what holds the VIP and balances on the VIP holder (haplane: its agent; classic: keepalived and haproxy)",
			window: 4 * time.Second, maxGap: time.Second, localMaxGap: time.Second, apply: kill(holderAgent)},
		{name: "vip-holder-link-down", desc: "pull the VIP holder's cable (its link goes down), then plug it back",
			window: 4 * time.Second, maxGap: time.Second, localMaxGap: time.Second, apply: func(r *chaosRun) (string, func() error, error) {
				h, err := r.holder()
				if err != nil {
					return "", nil, err
				}
				r.event("link down on " + h)
				if err := r.st.SetLink(h, false); err != nil {
					return h, nil, err
				}
				return h, func() error { r.event("link up on " + h); return r.st.SetLink(h, true) }, nil
			}},
		// A planned stop (systemctl stop, kubelet deleting the static
		// pod): with VRRP the priority-0 advert hands the VIP over at once;
		// with BGP the route is withdrawn while the load balancer still
		// serves, so new connections go to the other nodes and none waits
		// for a hold time or BFD. Not "no failed probe": a router's ECMP
		// (Linux's hash-threshold) moves some flows whenever its set of
		// next hops changes, the withdrawn node's and some of the others',
		// so a probe in flight at the withdrawal or the re-announcement
		// can be reset.
		{name: "vip-holder-stop", desc: "SIGTERM the VIP holder's agent (a planned stop), start it again after the window: the VIP leaves before the load balancer stops serving",
			window: 4 * time.Second, maxGap: time.Second, maxGapBGP: 500 * time.Millisecond, apply: down(true, holderAgent)},
		{name: "apiserver-kill", desc: "kill -9 the API server on the VIP holder: the load balancers retry on another one",
			window: 4 * time.Second, maxGap: time.Second, apply: kill(holderAPI)},
		{name: "apiserver-hang", desc: "SIGSTOP the API server on the VIP holder (it accepts connections and never answers), then SIGCONT",
			window: 5 * time.Second, maxGap: time.Second, apply: func(r *chaosRun) (string, func() error, error) {
				h, name, err := holderAPI(r)
				if err != nil {
					return "", nil, err
				}
				r.event("SIGSTOP " + name + " on " + h)
				if err := r.st.Signal(h, name, syscall.SIGSTOP); err != nil {
					return h, nil, err
				}
				return h, func() error { r.event("SIGCONT " + name + " on " + h); return r.st.Signal(h, name, syscall.SIGCONT) }, nil
			}},
		{name: "etcd-member-kill", desc: "kill -9 an etcd member that is neither the leader nor on the VIP holder",
			window: 4 * time.Second, maxGap: time.Second, apply: kill(etcdOf(false))},
		{name: "etcd-leader-kill", desc: "kill -9 the etcd leader: the members elect another",
			window: 5 * time.Second, maxGap: 3 * time.Second, apply: kill(etcdOf(true))},
		// /readyz must fail while etcd has no quorum: its gap is the
		// outage of readiness, from the fault until the API servers are
		// ready again after the members' restart (bounded: they must come
		// back). /livez?exclude=etcd shows that the VIP, the load balancer
		// and the API servers themselves kept serving all along.
		{name: "etcd-quorum-loss", vipStays: true, desc: "kill -9 two of three etcd members (none on the VIP holder), restart them after 6s: /readyz fails until quorum is back, while the VIP, the load balancer and the API servers keep serving /livez (etcd excluded)",
			window: 6 * time.Second, post: 12 * time.Second, maxGap: 16 * time.Second,
			alsoPath: "/livez?exclude=etcd", alsoMaxGap: time.Second, apply: func(r *chaosRun) (string, func() error, error) {
				h, err := r.holder()
				if err != nil {
					return "", nil, err
				}
				var victims []string
				for _, m := range r.st.EtcdHosts() {
					if m != h && len(victims) < 2 {
						victims = append(victims, m)
					}
				}
				if len(victims) < 2 {
					return "", nil, errors.New("fewer than two etcd members off the VIP holder")
				}
				for _, v := range victims {
					r.event("kill -9 " + r.st.EtcdProc(v) + " on " + v)
					if err := r.st.Signal(v, r.st.EtcdProc(v), syscall.SIGKILL); err != nil {
						return v, nil, err
					}
				}
				return strings.Join(victims, "+"), func() error {
					for _, v := range victims {
						r.waitExit(v, r.st.EtcdProc(v))
						r.event("restart " + r.st.EtcdProc(v) + " on " + v)
						if _, err := r.st.Restart(v, r.st.EtcdProc(v)); err != nil {
							return err
						}
					}
					return nil
				}, nil
			}},
		{name: "controller-manager-leader-kill", desc: "kill -9 the kube-controller-manager holding its leader Lease; another takes the Lease",
			kubeOnly: true, window: 30 * time.Second, maxGap: time.Second, lease: "kube-controller-manager", apply: kill(leaseHolder("kube-controller-manager"))},
		{name: "scheduler-leader-kill", desc: "kill -9 the kube-scheduler holding its leader Lease; another takes the Lease",
			kubeOnly: true, window: 30 * time.Second, maxGap: time.Second, lease: "kube-scheduler", apply: kill(leaseHolder("kube-scheduler"))},
		{name: "partition-heal", desc: "cut the VIP holder off the network with its link still up (it keeps claiming the VIP), then heal: the two masters resolve to one",
			window: 4 * time.Second, maxGap: time.Second, apply: func(r *chaosRun) (string, func() error, error) {
				h, err := r.holder()
				if err != nil {
					return "", nil, err
				}
				r.event("partition " + h)
				if err := r.st.SetPartitioned(h, true); err != nil {
					return h, nil, err
				}
				return h, func() error { r.event("heal " + h); return r.st.SetPartitioned(h, false) }, nil
			}},
		{name: "agent-kill", desc: "kill -9 the VIP holder's agent and leave it dead: the next node takes the VIP, and the dead node's copy of the address expires by itself (vip.addressLifetime), so within 2s only the new holder answers for it",
			vipLeavesWithin: 2 * time.Second, window: 5 * time.Second, maxGap: time.Second, apply: kill(holderAgent)},
		{name: "apiserver-all-stall", desc: "SIGSTOP every API server at once for 5s, then SIGCONT: nobody serves better, so the VIP stays where it is",
			vipStays: true, window: 5 * time.Second, post: 6 * time.Second, maxGap: 12 * time.Second, apply: func(r *chaosRun) (string, func() error, error) {
				var hosts []string
				for _, h := range r.st.Hosts {
					if h.Role == "control-plane" {
						hosts = append(hosts, h.Name)
					}
				}
				name := r.st.APIServerProc()
				r.event("SIGSTOP " + name + " on " + strings.Join(hosts, ", "))
				for _, h := range hosts {
					if err := r.st.Signal(h, name, syscall.SIGSTOP); err != nil {
						return "all", nil, err
					}
				}
				return "all", func() error {
					r.event("SIGCONT " + name + " everywhere")
					var errs []error
					for _, h := range hosts {
						errs = append(errs, r.st.Signal(h, name, syscall.SIGCONT))
					}
					return errors.Join(errs...)
				}, nil
			}},
		permanentLoss(),
		rollingUpgrade(),
		nodeReboot(),
	}
}

// ChaosOptions choose what `lab chaos` runs.
type ChaosOptions struct {
	// Scenarios by name; empty or "all": every one.
	Scenarios []string
	// Stack names what serves the VIP and the balancing (for the report).
	Stack string
	// UpgradeBin is the folder of the release the rolling-upgrade
	// scenario moves the control plane to (K8sBinaries of a version).
	UpgradeBin string
}

// RunChaos runs the scenarios one after another, each from a settled lab,
// and returns their results.
func RunChaos(ctx context.Context, env ChaosEnv, o ChaosOptions) (*Report, error) {
	all := scenarios()
	want := o.Scenarios
	if len(want) == 0 || slices.Contains(want, "all") {
		want = Scenarios()
	}
	var run []scenario
	for _, w := range want {
		i := slices.IndexFunc(all, func(s scenario) bool { return s.name == w })
		if i < 0 {
			return nil, fmt.Errorf("lab: chaos: no scenario %q (have %s)", w, strings.Join(Scenarios(), ", "))
		}
		run = append(run, all[i])
	}
	st := env.State
	if env.Holder == nil {
		env.Holder = st.VIPHolder
	}
	if o.Stack == "" {
		o.Stack = st.Stack()
	}
	rep := &Report{Started: time.Now().UTC(), Endpoint: st.Endpoint, Topology: st.Topology()}
	for _, h := range st.Hosts {
		if h.Role == "control-plane" {
			rep.Nodes++
		}
	}
	for _, s := range run {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if (s.name == "vip-holder-kill" || s.name == "agent-kill") && !st.SeparateEtcd {
			// The member dies with the agent: when it led etcd, every read
			// waits for etcd's election (its 1s election timeout, then a
			// vote), whatever the VIP does.
			s.desc += "; its etcd member dies with it, and every API read waits for etcd's election when it was the leader"
			s.maxGap = 3 * time.Second
		}
		if s.name == "rolling-upgrade" && st.Runtime == RuntimeKubelet {
			// kubeadm upgrades a node in about a minute: it replaces one
			// static pod at a time and waits for each.
			s.desc = "one node at a time, the VIP holder last: haplane maintenance start --keep-vip, kubeadm upgrade apply (first node) or kubeadm upgrade node with the new release's kubeadm, the new apiserver ready, maintenance stop; no probe may fail and no acknowledged write may be lost"
			s.window = kubeletUpgradeBound
		}
		if s.maxGapBGP > 0 && st.VIPLB == VIPLBHaplaneBGP {
			s.maxGap = s.maxGapBGP
		}
		res := ScenarioResult{Name: s.name, Description: s.desc, Stack: o.Stack, Backend: st.Backend, MaxGapW: s.maxGap}
		if s.kubeOnly && st.Backend != BackendKube {
			res.Skipped = "needs the kube backend (leader Leases of the real scheduler and controller-manager)"
			rep.Scenarios = append(rep.Scenarios, res)
			fmt.Fprintf(env.Out, "chaos: %s: skipped: %s\n", s.name, res.Skipped)
			continue
		}
		if s.needsEtcdProc && !st.SeparateEtcd && st.Topology() == config.TopologyStacked {
			res.Skipped = "needs etcd as its own process (--separate-etcd, the default with real Kubernetes, or --topology external)"
			rep.Scenarios = append(rep.Scenarios, res)
			fmt.Fprintf(env.Out, "chaos: %s: skipped: %s\n", s.name, res.Skipped)
			continue
		}
		if s.needsKubelet && st.Runtime != RuntimeKubelet {
			res.Skipped = "needs the kubelet runtime (lab up --runtime kubelet)"
			rep.Scenarios = append(rep.Scenarios, res)
			fmt.Fprintf(env.Out, "chaos: %s: skipped: %s\n", s.name, res.Skipped)
			continue
		}
		if s.needsUpgrade && o.UpgradeBin == "" {
			res.Skipped = "needs a release to upgrade to (lab chaos --upgrade-to v1.MINOR.PATCH)"
			rep.Scenarios = append(rep.Scenarios, res)
			fmt.Fprintf(env.Out, "chaos: %s: skipped: %s\n", s.name, res.Skipped)
			continue
		}
		if err := waitSettled(ctx, env, 2*time.Minute); err != nil {
			return rep, fmt.Errorf("lab: chaos: before %s: %w", s.name, err)
		}
		fmt.Fprintf(env.Out, "chaos: %s: %s\n", s.name, s.desc)
		r := &chaosRun{env: env, st: st, upgradeBin: o.UpgradeBin}
		if err := r.run(ctx, s, &res); err != nil {
			return rep, fmt.Errorf("lab: chaos: %s: %w", s.name, err)
		}
		rep.Scenarios = append(rep.Scenarios, res)
		fmt.Fprintf(env.Out, "chaos: %s: %s\n", s.name, res.Verdict)
		// Leave the cluster as it was found.
		if err := waitSettled(ctx, env, 2*time.Minute); err != nil {
			return rep, fmt.Errorf("lab: chaos: after %s: %w", s.name, err)
		}
	}
	return rep, nil
}

func waitSettled(ctx context.Context, env ChaosEnv, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !env.Settled() {
		if time.Now().After(deadline) {
			return fmt.Errorf("the lab did not settle within %s (one VIP holder, every agent, backend and etcd member up)", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

// chaosRun is one scenario in progress.
type chaosRun struct {
	env ChaosEnv
	st  *State
	t0  time.Time
	// upgradeBin: ChaosOptions.UpgradeBin.
	upgradeBin string

	mu     sync.Mutex // protects events
	events []Event
}

func (r *chaosRun) event(what string) {
	r.mu.Lock()
	r.events = append(r.events, Event{At: time.Since(r.t0), What: what})
	r.mu.Unlock()
}

func (r *chaosRun) holder() (string, error) {
	h := r.env.Holder()
	if r.st.VIPLB == VIPLBHaplaneBGP {
		// With BGP every announcing node holds the VIP: the fault hits the first.
		h, _, _ = strings.Cut(h, "+")
	}
	if h == "nobody" || strings.Contains(h, "+") {
		return "", fmt.Errorf("no single VIP holder (%s)", h)
	}
	return h, nil
}

// waitExit waits (a little) for a killed process to be gone, so its
// restart does not find it still running.
func (r *chaosRun) waitExit(host, name string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if p, ok := r.st.Proc(host, name); !ok || !netns.Alive(p.PID) {
			return
		}
	}
}

// leaseHolder asks the API (through the VIP, from the client host) which
// host holds a leader Lease.
func (r *chaosRun) leaseHolder(lease string) (string, error) {
	out, err := r.st.Kubectl("admin.conf", "-n", "kube-system", "get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("lease %s: %v: %s", lease, err, strings.TrimSpace(string(out)))
	}
	h := HolderHost(strings.TrimSpace(string(out)))
	if _, ok := r.st.Host(h); !ok {
		return "", fmt.Errorf("lease %s is held by %q, not by a lab host", lease, out)
	}
	return h, nil
}

func (r *chaosRun) run(ctx context.Context, s scenario, res *ScenarioResult) error {
	const pre = time.Second
	post := s.post
	if post == 0 {
		post = 3 * time.Second
	}
	total := pre + s.window + post
	r.t0 = time.Now()
	args := []string{"-o", "json", "lab", "observe", "--endpoint", r.st.Endpoint, "--ca", r.st.CAFile(),
		"--t0", strconv.FormatInt(r.t0.UnixNano(), 10), "--for", total.String(), "--run", fmt.Sprintf("%s-%d", s.name, r.t0.Unix())}
	if s.probePath != "" {
		args = append(args, "--path", s.probePath)
	}
	if s.alsoPath != "" {
		args = append(args, "--also-path", s.alsoPath)
	}
	if r.st.Backend == BackendKube {
		args = append(args, "--kubeconfig", filepath.Join(r.st.HostDir("cp1"), "admin.conf"))
	}
	if ep := r.st.NodeLocalEndpoint(); ep != "" {
		args = append(args, "--local-endpoint", ep)
	}
	obs := (&Host{NS: r.st.Prefix + "-client"}).Command(r.st.Binary, args...)
	var stdout, stderr strings.Builder
	obs.Stdout, obs.Stderr = &stdout, &stderr
	if err := obs.Start(); err != nil {
		return fmt.Errorf("observer: %w", err)
	}
	observed := make(chan error, 1)
	go func() { observed <- obs.Wait() }()

	// The VIP holder every 100ms until the probing ends.
	var holders []Mark
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for time.Since(r.t0) < total {
			at := time.Since(r.t0) // a poll takes a while: stamp its start
			h := r.env.Holder()
			if len(holders) == 0 || holders[len(holders)-1].Value != h {
				holders = append(holders, Mark{At: at, Value: h})
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	time.Sleep(pre)
	faultAt := time.Since(r.t0)
	target, heal, err := s.apply(r)
	res.Target = target
	var healErr error
	if heal != nil {
		time.Sleep(max(0, pre+s.window-time.Since(r.t0)))
		healErr = heal()
	}
	<-pollDone
	werr := <-observed
	res.Duration = time.Since(r.t0)
	res.Events, res.VIPHolder = r.events, holders
	if err != nil {
		return fmt.Errorf("fault: %w", err)
	}
	if healErr != nil {
		return fmt.Errorf("heal: %w", healErr)
	}
	if err := json.Unmarshal([]byte(stdout.String()), &res.Observed); err != nil {
		return fmt.Errorf("observer: %v (%v): %s", err, werr, strings.TrimSpace(stderr.String()))
	}
	if werr != nil {
		return fmt.Errorf("observer: %v: %s", werr, strings.TrimSpace(stderr.String()))
	}
	res.LeaseTakeover = leaseTakeovers(res.Observed.Leases, faultAt, s.lease)
	judge(res, s)
	if r.st.Runtime == RuntimeKubelet {
		r.judgePodWatch(ctx, res, s)
	}
	if s.check != nil {
		if why := s.check(r); why != "" {
			if res.Pass {
				res.Verdict = "fail: " + why
			} else {
				res.Verdict += "; " + why
			}
			res.Pass = false
		}
	}
	if why := judgeVIP(res.VIPHolder, s, res.Target, faultAt); why != "" {
		if res.Pass {
			res.Verdict = "fail: " + why
		} else {
			res.Verdict += "; " + why
		}
		res.Pass = false
	}
	return nil
}

// leaseTakeovers reports every Lease that changed hands after the fault
// (a partition or a VIP move can move a leader too), and own, the
// scenario's Lease, always (0 when it did not change hands); nil when
// there is nothing to report.
func leaseTakeovers(leases map[string][]Mark, fault time.Duration, own string) map[string]time.Duration {
	var out map[string]time.Duration
	set := func(name string, d time.Duration) {
		if out == nil {
			out = map[string]time.Duration{}
		}
		out[name] = d
	}
	for name, marks := range leases {
		if d := takeover(marks, fault); d > 0 || name == own {
			set(name, d)
		}
	}
	if _, ok := out[own]; own != "" && !ok {
		set(own, 0)
	}
	return out
}

// takeover is how long after the fault a holder other than the one of
// that instant held the Lease (0: none did).
func takeover(marks []Mark, fault time.Duration) time.Duration {
	before := ""
	for _, m := range marks {
		if m.At <= fault {
			before = m.Value
			continue
		}
		if m.Value != before && m.Value != "nobody" && m.Value != "" {
			return m.At - fault
		}
	}
	return 0
}

func judge(res *ScenarioResult, s scenario) {
	o := res.Observed
	var why []string
	if o.Lost > 0 {
		why = append(why, fmt.Sprintf("%d acknowledged writes lost", o.Lost))
	}
	if o.MaxGap > s.maxGap {
		why = append(why, fmt.Sprintf("longest gap %s > %s", o.MaxGap.Round(time.Millisecond), s.maxGap))
	}
	if s.noFailures && o.Failed > 0 {
		why = append(why, fmt.Sprintf("%d of %d probes failed (want none)", o.Failed, o.Requests))
	}
	if s.lease != "" && res.LeaseTakeover[s.lease] == 0 {
		why = append(why, "no new "+s.lease+" leader during the scenario")
	}
	also := ""
	for _, a := range o.Also {
		if a.Endpoint != "" {
			also += fmt.Sprintf("; node-local LB: longest gap %s, %d of %d failed", a.MaxGap.Round(time.Millisecond), a.Failed, a.Requests)
			if s.localMaxGap > 0 && a.MaxGap > s.localMaxGap {
				why = append(why, fmt.Sprintf("node-local LB %s: longest gap %s > %s", a.Endpoint, a.MaxGap.Round(time.Millisecond), s.localMaxGap))
			}
			if s.noFailures && a.Failed > 0 {
				why = append(why, fmt.Sprintf("node-local LB %s: %d of %d probes failed (want none)", a.Endpoint, a.Failed, a.Requests))
			}
			continue
		}
		if a.Path != s.alsoPath {
			continue
		}
		also = fmt.Sprintf("; %s: longest gap %s, %d of %d failed", a.Path, a.MaxGap.Round(time.Millisecond), a.Failed, a.Requests)
		if a.MaxGap > s.alsoMaxGap {
			why = append(why, fmt.Sprintf("%s: longest gap %s > %s", a.Path, a.MaxGap.Round(time.Millisecond), s.alsoMaxGap))
		}
		if s.noFailures && a.Failed > 0 {
			why = append(why, fmt.Sprintf("%s: %d of %d probes failed (want none)", a.Path, a.Failed, a.Requests))
		}
	}
	if s.alsoPath != "" && !strings.Contains(also, s.alsoPath+":") {
		why = append(why, "no probe of "+s.alsoPath)
	}
	res.Pass = len(why) == 0
	if res.Pass {
		res.Verdict = fmt.Sprintf("pass: longest gap %s, %d of %d probes failed, %d writes acknowledged, none lost%s",
			o.MaxGap.Round(time.Millisecond), o.Failed, o.Requests, o.Writes, also)
		return
	}
	res.Verdict = "fail: " + strings.Join(why, "; ")
}

// judgeVIP checks the VIP holder marks (sampled every 100ms) against the
// scenario's VIP rules; "" when they hold.
func judgeVIP(holders []Mark, s scenario, target string, faultAt time.Duration) string {
	if len(holders) == 0 || (!s.vipStays && s.vipLeavesWithin == 0) {
		return ""
	}
	if s.vipStays {
		first := holders[0].Value
		for _, m := range holders[1:] {
			if m.Value != first {
				return fmt.Sprintf("the VIP moved from %s to %s at %s", first, m.Value, m.At.Round(time.Millisecond))
			}
		}
		if first == "nobody" || strings.Contains(first, "+") {
			return "no single VIP holder: " + first
		}
	}
	if s.vipLeavesWithin > 0 {
		// From by until the heal (the agent's restart takes the VIP back).
		by, heal := faultAt+s.vipLeavesWithin, faultAt+s.window
		// Marks are stamped when a poll of every host starts, and a poll
		// takes a while on a busy machine: judge the polls started at by
		// or later, each of which read every host after by.
		for _, m := range holders {
			if m.At < by {
				continue
			}
			if m.At >= heal {
				break
			}
			if m.Value == "nobody" || strings.Contains(m.Value, "+") || m.Value == target {
				at := max(m.At, by)
				return fmt.Sprintf("%s after the fault the VIP is held by %s (want one host, not %s)", (at - faultAt).Round(time.Millisecond), m.Value, target)
			}
		}
	}
	return ""
}

// VIPHolder says which hosts have the VIP on their interface: a host name,
// "nobody", or "a+b" while two claim it.
func (s *State) VIPHolder() string {
	ep := strings.TrimPrefix(s.Endpoint, "https://")
	vip := ep
	if i := strings.LastIndexByte(ep, ':'); i >= 0 {
		vip = strings.Trim(ep[:i], "[]")
	}
	var holders []string
	for _, h := range s.Hosts {
		if h.Role != "control-plane" {
			continue
		}
		out, err := exec.Command("ip", "-n", h.NS, "-o", "addr", "show").Output()
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(out)) {
			if a, _, _ := strings.Cut(f, "/"); a == vip {
				holders = append(holders, h.Name)
				break
			}
		}
	}
	if len(holders) == 0 {
		return "nobody"
	}
	return strings.Join(holders, "+")
}
