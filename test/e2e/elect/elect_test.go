package elect

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/haplane/haplane/internal/testutil/testetcd"
)

// The probe: when the test binary runs with HAPLANE_ELECT_PROBE=LOCK,LOG it
// is the elected command. It takes an exclusive, non-blocking flock on LOCK
// for as long as it runs: if another copy holds it, two ran at once.
func TestMain(m *testing.M) {
	if spec := os.Getenv("HAPLANE_ELECT_PROBE"); spec != "" {
		os.Exit(probe(spec))
	}
	os.Exit(m.Run())
}

func probe(spec string) int {
	lockPath, logPath, _ := strings.Cut(spec, ",")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 2
	}
	defer logf.Close()
	token := os.Getenv("HAPLANE_FENCING_TOKEN")
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return 2
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fmt.Fprintf(logf, "OVERLAP %s %d\n", token, os.Getppid())
		return 3
	}
	fmt.Fprintf(logf, "start %s %d\n", token, os.Getppid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	fmt.Fprintf(logf, "stop %s %d\n", token, os.Getppid())
	return 0
}

type start struct {
	token int64
	elect int // PID of the haplane elect that runs it
}

func readStarts(t *testing.T, path string) ([]start, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	var starts []start
	var overlaps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue
		}
		tok, _ := strconv.ParseInt(fields[1], 10, 64)
		pid, _ := strconv.Atoi(fields[2])
		switch fields[0] {
		case "start":
			starts = append(starts, start{tok, pid})
		case "OVERLAP":
			overlaps = append(overlaps, sc.Text())
		}
	}
	return starts, overlaps
}

// TestFiftyHandovers keeps two `haplane elect` candidates on one lock and
// takes the leader away 50 times (SIGTERM four times in five: it resigns
// and the other starts at once; SIGKILL the fifth: the other starts once
// the lease expires), replacing each stopped candidate. The command's
// file-lock probe must never find the lock held, and fencing tokens must
// grow with every leader.
func TestFiftyHandovers(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the 50-handover test in -short mode")
	}
	member := testetcd.Start(t, func(cfg *embed.Config) {
		// This test is about handovers, not durability: without fsync its
		// member does not stall on a disk busy with the other packages' labs,
		// which made a leader's lease renewal half a second late (the
		// candidate rightly gave up leadership) and its successor's campaign
		// miss the test's deadline, once in a CI run.
		cfg.UnsafeNoFsync = true
	})

	dir := t.TempDir()
	bin := filepath.Join(dir, "haplane")
	if out, err := exec.Command("go", "build", "-o", bin, "../../../cmd/haplane").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "probe.log")
	spec := filepath.Join(dir, "probe.lock") + "," + logPath
	const ttl = 3 * time.Second
	procs := map[int]*exec.Cmd{}
	spawn := func() {
		cmd := exec.Command(bin, "--log-level", "warn", "elect", "--lock", "probe", "--endpoints", member.URL,
			"--ttl", ttl.String(), "--grace", "1s", "--", self)
		cmd.Env = append(os.Environ(), "HAPLANE_ELECT_PROBE="+spec)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[cmd.Process.Pid] = cmd
		go cmd.Wait()
	}
	t.Cleanup(func() {
		for _, c := range procs {
			_ = c.Process.Kill()
		}
	})
	spawn()
	spawn()
	waitStarts := func(n int, within time.Duration) []start {
		deadline := time.Now().Add(within)
		for {
			s, _ := readStarts(t, logPath)
			if len(s) >= n {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d command starts after %s, want %d", len(s), within, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	starts := waitStarts(1, 15*time.Second)
	var slowest [2]time.Duration
	for i := range 50 {
		leader := starts[len(starts)-1].elect
		sig, kind := syscall.SIGTERM, 0
		if i%5 == 4 {
			sig, kind = syscall.SIGKILL, 1
		}
		t0 := time.Now()
		if err := syscall.Kill(leader, sig); err != nil {
			t.Fatalf("handover %d: signal leader %d: %v", i, leader, err)
		}
		delete(procs, leader)
		// After SIGKILL the other waits for the lease: TTL plus the
		// keep-alive period at most.
		starts = waitStarts(len(starts)+1, 2*ttl+5*time.Second)
		slowest[kind] = max(slowest[kind], time.Since(t0))
		spawn()
	}
	time.Sleep(300 * time.Millisecond)
	starts, overlaps := readStarts(t, logPath)
	if len(overlaps) > 0 {
		t.Fatalf("two commands ran at once:\n%s", strings.Join(overlaps, "\n"))
	}
	if len(starts) != 51 {
		t.Errorf("%d starts, want 51", len(starts))
	}
	for i := 1; i < len(starts); i++ {
		if starts[i].token <= starts[i-1].token {
			t.Fatalf("fencing tokens do not grow: %v", starts)
		}
	}
	t.Logf("50 handovers: slowest after SIGTERM %s, after SIGKILL %s (lease TTL %s)", slowest[0].Round(time.Millisecond), slowest[1].Round(time.Millisecond), ttl)
	if slowest[1] > ttl+2*time.Second {
		t.Errorf("after SIGKILL the next command started %s later; want within the lease TTL (%s) and a keep-alive", slowest[1], ttl)
	}
}
