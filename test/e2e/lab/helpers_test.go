package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// labEnv is one test's lab: the haplane binary built for it, the lab's
// state folder and its namespace prefix (tag and the test process's PID,
// so packages running side by side never share a name).
type labEnv struct {
	bin, dir, prefix string
}

// newLabEnv skips without root, builds haplane and picks the lab's names.
func newLabEnv(t *testing.T, tag string) *labEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the lab needs root for network namespaces")
	}
	e := &labEnv{bin: filepath.Join(t.TempDir(), "haplane"), dir: filepath.Join(t.TempDir(), "lab"),
		prefix: fmt.Sprintf("%s%d", tag, os.Getpid()%100000)}
	if out, err := exec.Command("go", "build", "-o", e.bin, "../../../cmd/haplane").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return e
}

// hp runs haplane with --output json and returns its standard output;
// the error carries its standard error.
func (e *labEnv) hp(args ...string) ([]byte, error) { return e.hpIn("", args...) }

// hpIn is hp inside the network namespace ns (on the machine itself when
// ns is empty).
func (e *labEnv) hpIn(ns string, args ...string) ([]byte, error) {
	full := append([]string{"--output", "json"}, args...)
	cmd := exec.Command(e.bin, full...)
	if ns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns, e.bin}, full...)...)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("haplane %v: %v\n%s", args, err, stderr.String())
	}
	return out, nil
}

// downOnCleanup takes the lab down when the test ends and checks that
// none of its namespaces, nor any process in st (filled in by the test
// once the lab is up), is left. The state file is read again first: chaos
// restarts processes under new PIDs, and those must be gone too.
func (e *labEnv) downOnCleanup(t *testing.T, st *labState) {
	t.Cleanup(func() {
		if data, err := os.ReadFile(filepath.Join(e.dir, "state.json")); err == nil {
			var now labState
			if json.Unmarshal(data, &now) == nil {
				st.Procs = append(st.Procs, now.Procs...)
			}
		}
		if _, err := e.hp("lab", "down", "--dir", e.dir); err != nil {
			t.Errorf("lab down: %v", err)
		}
		list, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(list), e.prefix+"-") {
			t.Errorf("namespaces left after lab down:\n%s", list)
		}
		for _, p := range st.Procs {
			if alive(p.PID) {
				t.Errorf("process %s on %s (pid %d) survived lab down", p.Name, p.Host, p.PID)
			}
		}
	})
}

// up runs lab up with args in the env's folder and namespaces, checks
// that the VIP settled on cp1 (the highest priority), and reads the
// lab's state.json into st.
func (e *labEnv) up(t *testing.T, st any, args ...string) view {
	t.Helper()
	out, err := e.hp(append([]string{"lab", "up", "--dir", e.dir, "--prefix", e.prefix}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var v view
	if err := json.Unmarshal(out, &v); err != nil || v.VIPOwner != "cp1" {
		t.Fatalf("lab up: holder %q, want cp1 (%v)\n%s", v.VIPOwner, err, out)
	}
	data, err := os.ReadFile(filepath.Join(e.dir, "state.json"))
	if err != nil || json.Unmarshal(data, st) != nil {
		t.Fatalf("state: %v", err)
	}
	return v
}
