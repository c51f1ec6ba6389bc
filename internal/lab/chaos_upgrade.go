package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/netns"
)

// upgradeComponents are the control-plane processes a rolling upgrade
// replaces on each node, in the order they go down (the apiserver last,
// so the two that talk to it through the VIP never wait on it).
var upgradeComponents = []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver"}

// upgradeBound bounds the whole rolling upgrade: the observation lasts
// this long, so an upgrade that takes longer fails rather than ending
// unobserved.
const upgradeBound = 150 * time.Second

// rollingUpgrade is the rolling-upgrade scenario: one control-plane node
// at a time, the VIP holder last, as an operator upgrades. With haplane:
// `haplane maintenance start --keep-vip` on the node (the apiserver out
// of every pool and drained, etcd leadership moved; the VIP stays, as the
// agent and its load balancer keep running), its scheduler,
// controller-manager and apiserver stopped (SIGTERM) and started again
// from the new release's binaries, /readyz of the new apiserver, then
// `haplane maintenance stop`. With the classic stack, the same by hand
// as the guide's tools allow: keepalived stopped first on the VIP holder
// (the VIP moves to a backup), the components replaced, keepalived
// started again; haproxy's checks take the apiserver out and back.
func rollingUpgrade() scenario {
	return scenario{name: "rolling-upgrade", kubeOnly: true, needsUpgrade: true,
		desc:   "one node at a time, the VIP holder last: haplane maintenance start --keep-vip, the control plane's binaries replaced by another release and restarted, maintenance stop (classic, by hand: keepalived stopped on the VIP holder so the VIP moves first, haproxy's checks do the rest); no probe may fail and no acknowledged write may be lost",
		window: upgradeBound, post: 5 * time.Second, maxGap: 500 * time.Millisecond, noFailures: true,
		alsoPath: "/livez?exclude=etcd", alsoMaxGap: 500 * time.Millisecond,
		apply: func(r *chaosRun) (string, func() error, error) {
			if r.upgradeBin == "" {
				return "", nil, errors.New("no release to upgrade to (--upgrade-to)")
			}
			order, err := r.upgradeOrder()
			if err != nil {
				return "", nil, err
			}
			target := strings.Join(order, ",") + " to " + filepath.Base(r.upgradeBin)
			if r.st.Runtime == RuntimeKubelet {
				if err := r.kubeadmUpgrade(context.Background(), order); err != nil {
					return target, nil, err
				}
			} else {
				for _, h := range order {
					if err := r.upgradeNode(h); err != nil {
						return target, nil, fmt.Errorf("upgrade %s: %w", h, err)
					}
				}
			}
			r.st.K8sBin = r.upgradeBin
			if err := r.st.save(); err != nil {
				return target, nil, err
			}
			r.event("every node runs " + filepath.Base(r.upgradeBin))
			return target, nil, nil
		}}
}

// upgradeOrder lists the control-plane hosts, the VIP holder last.
func (r *chaosRun) upgradeOrder() ([]string, error) {
	h, err := r.holder()
	if err != nil {
		return nil, err
	}
	var order []string
	for _, hs := range r.st.Hosts {
		if hs.Role == "control-plane" && hs.Name != h {
			order = append(order, hs.Name)
		}
	}
	return append(order, h), nil
}

func (r *chaosRun) upgradeNode(h string) (err error) {
	classic := r.st.Stack() == VIPLBClassic
	keepalivedStopped := false
	if classic {
		if holder, _ := r.holder(); holder == h {
			r.event("stop keepalived on " + h)
			if err := r.stopProc(h, "keepalived"); err != nil {
				return err
			}
			keepalivedStopped = true
		}
	} else {
		r.event("haplane maintenance start on " + h)
		if err := r.maintenance(h, "start"); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				// Leave the lab as found where it can be: stop is
				// refused until the node's apiserver is ready again.
				if serr := r.maintenance(h, "stop"); serr != nil {
					err = fmt.Errorf("%w; and %s stays in maintenance: %v", err, h, serr)
				}
			}
		}()
	}
	for _, name := range upgradeComponents {
		r.event("stop " + name + " on " + h)
		if err := r.stopProc(h, name); err != nil {
			return err
		}
	}
	for _, name := range slices.Backward(upgradeComponents) {
		if _, err := r.st.Replace(h, name, filepath.Join(r.upgradeBin, name)); err != nil {
			return err
		}
	}
	r.event("started " + filepath.Base(r.upgradeBin) + " on " + h)
	hs, _ := r.st.Host(h)
	if err := r.probeNode(hs.Address, 60*time.Second); err != nil {
		return fmt.Errorf("the new kube-apiserver: %w", err)
	}
	r.event("kube-apiserver of " + h + " ready")
	if keepalivedStopped {
		r.event("start keepalived on " + h)
		if _, err := r.st.Restart(h, "keepalived"); err != nil {
			return err
		}
		return nil
	}
	if !classic {
		return r.maintenanceStop(h)
	}
	return nil
}

// maintenanceStop ends a node's maintenance once its new apiserver is
// ready. The agent's own checks must see it ready (rise after the probe
// that found it so): stop is refused until then, and an operator tries
// again, as this does for a while.
func (r *chaosRun) maintenanceStop(h string) error {
	r.event("haplane maintenance stop on " + h)
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if err = r.maintenance(h, "stop"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%w (still in maintenance)", err)
	}
	return nil
}

// stopGrace is how long a stopped component may take before SIGKILL. A
// kube-apiserver out of every pool still holds the watches of the
// clients that reached it before; it closes them on SIGTERM, then waits
// for its requests (up to a minute): they have moved by now, and the
// lab does not wait that long for them.
const stopGrace = 10 * time.Second

// stopProc stops a process as systemd or kubelet would: SIGTERM, and
// SIGKILL after stopGrace.
func (r *chaosRun) stopProc(h, name string) error { return r.stopProcWithin(h, name, stopGrace) }

// stopProcWithin is stopProc with grace between SIGTERM and SIGKILL (a
// unit's TimeoutStopSec).
func (r *chaosRun) stopProcWithin(h, name string, grace time.Duration) error {
	p, ok := r.st.Proc(h, name)
	if !ok {
		return fmt.Errorf("lab: no process %s on %s", name, h)
	}
	if !netns.Alive(p.PID) {
		// Gone already: kube-scheduler and kube-controller-manager exit
		// when they lose their leader Lease, and kubelet or systemd
		// would have started them again; the lab has neither.
		r.event(name + " on " + h + " was not running")
		return nil
	}
	if err := r.st.Signal(h, name, syscall.SIGTERM); err != nil {
		return err
	}
	if !netns.WaitGone([]int{p.PID}, grace) {
		r.event(fmt.Sprintf("%s on %s still running %v after SIGTERM: SIGKILL", name, h, grace))
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		if !netns.WaitGone([]int{p.PID}, 5*time.Second) {
			return fmt.Errorf("%s on %s (pid %d) did not exit", name, h, p.PID)
		}
	}
	return nil
}

// maintenance runs `haplane maintenance start|stop` against the node's
// agent, on its root-only socket, as an operator on that host would.
func (r *chaosRun) maintenance(h, action string) error {
	sock := filepath.Join(r.st.HostDir(h), "state", agent.DefaultSocketName)
	nh := r.st.nodeHost(h)
	if nh != nil {
		sock = filepath.Join(hostStateDir, agent.DefaultSocketName) // in the node's mount namespace
	}
	args := []string{"-o", "json", "maintenance", action, "--api-socket", sock}
	if action == "start" {
		// The agent stays up: the VIP stays too (see --keep-vip).
		args = append(args, "--drain-timeout", "5s", "--keep-vip")
	}
	cmd := exec.Command(r.st.Binary, args...)
	if nh != nil {
		cmd = nh.Command(context.Background(), r.st.Binary, args...)
	}
	out, err := cmd.CombinedOutput()
	var res struct {
		OK    bool `json:"ok"`
		Steps []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"steps"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil || err != nil || !res.OK {
		return fmt.Errorf("maintenance %s on %s: %v: %s", action, h, err, strings.TrimSpace(string(out)))
	}
	var steps []string
	for _, s := range res.Steps {
		steps = append(steps, s.Name)
	}
	r.event(fmt.Sprintf("maintenance %s on %s done (%s)", action, h, strings.Join(steps, ", ")))
	return nil
}

// probeNode waits for the apiserver at addr to answer /readyz, asked from
// the client host.
func (r *chaosRun) probeNode(addr string, d time.Duration) error {
	cmd := (&Host{NS: r.st.Prefix + "-client"}).Command(r.st.Binary, "lab", "probe",
		"--url", "https://"+addr+":6443/readyz", "--ca", r.st.CAFile(), "--timeout", d.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
