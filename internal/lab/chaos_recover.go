package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/haplane/haplane/internal/netns"
)

// permanentLoss is the etcd-permanent-loss scenario: two of three members
// are lost for good (killed, data dirs deleted), and the cluster is
// rebuilt from the third with `haplane etcd recover`, run on its host as
// an operator would, then the lost members rejoin on empty data dirs. The
// survivor is the etcd leader: a leader answers a write only once it
// applied it, so every acknowledged write is in its data (a follower may
// lag by a heartbeat, and what it lacks is lost with the quorum).
func permanentLoss() scenario {
	return scenario{name: "etcd-permanent-loss",
		desc:          "kill -9 two of three etcd members and delete their data dirs, then rebuild the cluster from the etcd leader with `haplane etcd recover --from` and let the two rejoin on empty data dirs: back to three voters, every acknowledged write kept",
		needsEtcdProc: true, window: 3 * time.Second, post: 25 * time.Second, maxGap: 30 * time.Second,
		// /livez within 2s: stopping the survivor and its forced start are
		// heavy on a small machine (a CI run on 2 busy cores saw 1.3s).
		alsoPath: "/livez?exclude=etcd", alsoMaxGap: 2 * time.Second,
		apply: func(r *chaosRun) (string, func() error, error) {
			survivor, err := r.env.EtcdLeader()
			if err != nil {
				return "", nil, err
			}
			var victims []string
			for _, m := range r.st.EtcdHosts() {
				if m != survivor {
					victims = append(victims, m)
				}
			}
			if len(victims) != 2 {
				return "", nil, fmt.Errorf("want three etcd members, have %d", len(victims)+1)
			}
			proc := r.st.EtcdProc(survivor)
			for _, v := range victims {
				r.event("kill -9 " + proc + " on " + v)
				if err := r.st.Signal(v, proc, syscall.SIGKILL); err != nil {
					return v, nil, err
				}
			}
			for _, v := range victims {
				r.waitExit(v, proc)
				r.event("delete the etcd data dir of " + v)
				if err := os.RemoveAll(r.st.etcdDataDir(v)); err != nil {
					return v, nil, err
				}
			}
			target := strings.Join(victims, "+") + " lost, from " + survivor
			return target, func() error { return r.recoverFrom(survivor, victims) }, nil
		}}
}

// etcdDataDir is where a host's etcd member keeps its data in the lab.
func (s *State) etcdDataDir(host string) string { return filepath.Join(s.HostDir(host), "etcd") }

// recoverFrom is the operator's part of the recovery: stop the survivor,
// run the recovery on its host, start it, then start the lost members.
func (r *chaosRun) recoverFrom(survivor string, victims []string) error {
	proc := r.st.EtcdProc(survivor)
	r.event("stop " + proc + " on " + survivor)
	if err := r.st.Signal(survivor, proc, syscall.SIGTERM); err != nil {
		return err
	}
	r.waitExit(survivor, proc)
	h, err := r.st.netHost(survivor)
	if err != nil {
		return err
	}
	pkiDir := filepath.Join(r.st.HostDir(survivor), "pki")
	args := []string{"-o", "json", "etcd", "recover", "--config", r.st.ClusterFile, "--from", survivor,
		"--pki-dir", pkiDir, "--data-dir", r.st.etcdDataDir(survivor), "--yes"}
	cmd := h.Command(r.st.Binary, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("haplane etcd recover on %s: %v: %s", survivor, err, lastLine(stderr.String()))
	}
	var plan struct {
		Revision int64 `json:"revision"`
		Keys     int64 `json:"keys"`
	}
	if err := json.Unmarshal(out, &plan); err != nil {
		return fmt.Errorf("haplane etcd recover on %s: its output: %v: %s", survivor, err, out)
	}
	r.event(fmt.Sprintf("recovered %s: revision %d, %d keys", survivor, plan.Revision, plan.Keys))
	r.event("start " + proc + " on " + survivor)
	if _, err := r.st.Restart(survivor, proc); err != nil {
		return err
	}
	// Only once the survivor serves: a member on an empty data dir that
	// finds no member answering bootstraps a cluster from the cluster
	// file, and the two lost ones would make a quorum of their own.
	if err := r.waitVoters(h, pkiDir, 1, 30*time.Second); err != nil {
		return err
	}
	for _, v := range victims {
		r.event("start " + proc + " on " + v + " (empty data dir)")
		if _, err := r.st.Restart(v, proc); err != nil {
			return err
		}
	}
	err = r.waitVoters(h, pkiDir, len(victims)+1, 90*time.Second)
	if err == nil {
		return nil
	}
	// A rejoining member that gave up (its turn for the one learner slot
	// etcd allows, its start) has exited: its systemd unit (Restart=always)
	// would start it again, and so does the lab, once. One still running
	// is named with its last log line.
	var why []string
	restarted := false
	for _, v := range victims {
		p, ok := r.st.Proc(v, proc)
		if !ok {
			continue
		}
		tail := lastLine(readTail(p.Log, 4096))
		if netns.Alive(p.PID) {
			why = append(why, fmt.Sprintf("%s running, last log: %s", v, tail))
			continue
		}
		why = append(why, fmt.Sprintf("%s exited, last log: %s", v, tail))
		r.event("restart " + proc + " on " + v + " (it exited; as systemd's Restart=always would)")
		if _, rerr := r.st.Restart(v, proc); rerr != nil {
			return fmt.Errorf("%w; restart %s: %v", err, v, rerr)
		}
		restarted = true
	}
	if restarted {
		if rerr := r.waitVoters(h, pkiDir, len(victims)+1, 90*time.Second); rerr == nil {
			return nil
		}
	}
	return fmt.Errorf("%w [%s]", err, strings.Join(why, "; "))
}

// readTail returns up to the last n bytes of the file at path.
func readTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// waitVoters polls `haplane etcd status` on host until the member list
// holds want voting members, all healthy, and no learner. (The report's
// own voter count is the cluster file's, whatever the list says.)
func (r *chaosRun) waitVoters(h *Host, pkiDir string, want int, d time.Duration) error {
	var last string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		out, _ := h.Command(r.st.Binary, "-o", "json", "etcd", "status", "--config", r.st.ClusterFile, "--pki-dir", pkiDir).Output()
		var rep struct {
			Members []struct {
				ID      string `json:"id"`
				Learner bool   `json:"learner"`
				Healthy bool   `json:"healthy"`
			} `json:"members"`
		}
		if json.Unmarshal(out, &rep) != nil {
			continue
		}
		voters, healthy, learners := 0, 0, 0
		for _, m := range rep.Members {
			switch {
			case m.ID == "":
			case m.Learner:
				learners++
			default:
				voters++
				if m.Healthy {
					healthy++
				}
			}
		}
		last = fmt.Sprintf("%d voters, %d healthy, %d learners", voters, healthy, learners)
		if voters == want && healthy == want && learners == 0 {
			r.event(fmt.Sprintf("etcd at %d healthy voters", want))
			return nil
		}
	}
	if last == "" {
		return errors.New("etcd status never answered after the recovery")
	}
	return fmt.Errorf("etcd not at %d healthy voters within %s (last: %s)", want, d, last)
}

// lastLine is the last non-empty line of a command's output: its error.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
