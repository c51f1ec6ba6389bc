package lab

// The kubelet lab's in-cluster API client: a pod on the worker (host
// network, its service-account token) that watches the ConfigMaps the
// chaos writer creates, through the worker's node-local load balancer, as
// a controller on that node would. Each scenario then says how late the
// pod saw each acknowledged write, and whether it missed one.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/haplane/haplane/internal/kubeimages"
)

// WatcherName names the watcher's pod and its service account.
const WatcherName = "labwatch"

// chaosRunLabel marks the chaos writer's objects (observe.go).
const chaosRunLabel = "haplane.dev/chaos-run"

// watcherManifest is the watcher pod on the worker, with the right to
// watch ConfigMaps of the default namespace and nothing else. server is
// the node-local load balancer; serverName the name the apiservers'
// certificate is verified for.
func watcherManifest(server, serverName string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: %[1]s, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: %[1]s, namespace: default}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: %[1]s, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: %[1]s}
subjects:
- {kind: ServiceAccount, name: %[1]s, namespace: default}
---
apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: default}
spec:
  serviceAccountName: %[1]s
  nodeName: %[2]s
  hostNetwork: true
  containers:
  - name: watch
    image: %[3]s
    args: [watch, %[4]q, %[5]q, default, %[6]q]
`, WatcherName, WorkerName, kubeimages.WorkloadRef, server, serverName, chaosRunLabel)
}

// startWatcher creates the watcher and waits until it runs.
func (st *State) startWatcher(kubectl func(name string, args ...string) ([]byte, error), server, serverName string) error {
	path := filepath.Join(st.Dir, WatcherName+".yaml")
	if err := os.WriteFile(path, []byte(watcherManifest(server, serverName)), 0o644); err != nil {
		return err
	}
	if _, err := kubectl("watcher", "apply", "-f", path); err != nil {
		return err
	}
	_, err := kubectl("watcher-ready", "wait", "--for=condition=Ready", "pod/"+WatcherName, "--timeout=2m")
	return err
}

// PodWatch is how the watcher pod saw a scenario's acknowledged writes.
type PodWatch struct {
	Writes int `json:"writes"`
	// Missed writes never reached the watcher.
	Missed int `json:"missed"`
	// MaxDelay is the longest time from a write's acknowledgement to the
	// watcher's event for it (an event before the acknowledgement counts
	// 0), and Worst that write's name.
	MaxDelay time.Duration `json:"maxDelayNs"`
	Worst    string        `json:"worst,omitempty"`
	// Retries is how often the watcher's stream ended and was opened
	// again during the scenario.
	Retries int `json:"retries"`
}

func (p PodWatch) String() string {
	return fmt.Sprintf("pod watch on %s: %d writes, longest delay %s, %d missed, %d reconnects",
		WorkerName, p.Writes, p.MaxDelay.Round(time.Millisecond), p.Missed, p.Retries)
}

// watchLog is the watcher's output: when it first saw each object, and
// when its stream was opened again.
type watchLog struct {
	seen    map[string]time.Time
	retries []time.Time
}

// parseWatchLog reads labpod watch's lines ("<unix ns> <TYPE> <name>" or
// "<unix ns> RETRY <why>"); other lines are skipped.
func parseWatchLog(b []byte) watchLog {
	l := watchLog{seen: map[string]time.Time{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		t := time.Unix(0, ns)
		switch f[1] {
		case "RETRY":
			l.retries = append(l.retries, t)
		case "ADDED", "MODIFIED":
			if _, ok := l.seen[f[2]]; !ok {
				l.seen[f[2]] = t
			}
		}
	}
	return l
}

// podWatchOf measures the acknowledged writes (times since t0) against the
// watcher's log; retries count from t0 to end.
func podWatchOf(t0, end time.Time, acked []Mark, l watchLog) PodWatch {
	p := PodWatch{Writes: len(acked)}
	for _, a := range acked {
		at, ok := l.seen[a.Value]
		if !ok {
			p.Missed++
			continue
		}
		if d := at.Sub(t0.Add(a.At)); d > p.MaxDelay {
			p.MaxDelay, p.Worst = d, a.Value
		}
	}
	for _, t := range l.retries {
		if !t.Before(t0) && !t.After(end) {
			p.Retries++
		}
	}
	return p
}

// podWatch reads the watcher's log after a scenario; it waits a little
// for the last writes' events, which may still be on their way.
func (r *chaosRun) podWatch(ctx context.Context, acked []Mark) (PodWatch, error) {
	end := time.Now()
	var p PodWatch
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err := r.st.Kubectl("admin.conf", "logs", "pod/"+WatcherName, "--since-time", r.t0.Add(-time.Minute).UTC().Format(time.RFC3339)).Output()
		if err == nil {
			if p = podWatchOf(r.t0, end, acked, parseWatchLog(out)); p.Missed == 0 {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				return p, fmt.Errorf("kubectl logs %s: %w", WatcherName, err)
			}
			return p, nil
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// judgePodWatch adds the watcher pod's view to a kubelet lab's result and,
// with a bound, fails the scenario on a late or missed write or a worker
// that was not Ready all along.
func (r *chaosRun) judgePodWatch(ctx context.Context, res *ScenarioResult, s scenario) {
	fail := func(why string) {
		if res.Pass {
			res.Verdict = "fail: " + why
		} else {
			res.Verdict += "; " + why
		}
		res.Pass = false
	}
	pw, err := r.podWatch(ctx, res.Observed.Acked)
	if err != nil {
		if s.podWatchMax > 0 {
			fail(err.Error())
		}
		return
	}
	res.PodWatch = &pw
	res.Verdict += "; " + pw.String()
	if s.podWatchMax == 0 {
		return
	}
	if pw.Missed > 0 {
		fail(fmt.Sprintf("the watcher pod missed %d of %d writes", pw.Missed, pw.Writes))
	}
	if pw.MaxDelay > s.podWatchMax {
		fail(fmt.Sprintf("the watcher pod saw %s %s after its acknowledgement (> %s)", pw.Worst, pw.MaxDelay.Round(time.Millisecond), s.podWatchMax))
	}
	if why := r.workerReadyAllAlong(); why != "" {
		fail(why)
	}
}

// workerReadyAllAlong: the worker's Ready condition has not changed since
// before the fault ("" if so).
func (r *chaosRun) workerReadyAllAlong() string {
	out, err := r.st.Kubectl("admin.conf", "get", "node", WorkerName, "-o",
		`jsonpath={range .status.conditions[?(@.type=="Ready")]}{.status} {.lastTransitionTime}{end}`).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("node %s: %v: %s", WorkerName, err, strings.TrimSpace(string(out)))
	}
	status, since, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	t, err := time.Parse(time.RFC3339, since)
	if status != "True" || err != nil || t.After(r.t0) {
		return fmt.Sprintf("node %s: Ready %s since %s, not Ready all along", WorkerName, status, since)
	}
	return ""
}
