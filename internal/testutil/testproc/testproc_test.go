package testproc

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func start(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestStopAndKill: Kill9 ends a process by SIGKILL, Stop by SIGTERM, and
// one that ignores SIGTERM by SIGKILL after the grace period.
func TestStopAndKill(t *testing.T) {
	s := New(t)
	a, b := start(t, "sleep", "60"), start(t, "sleep", "60")
	s.Add("a", a)
	s.Add("b", b)
	var names []string
	s.Each(func(n string, _ *exec.Cmd) { names = append(names, n) })
	if len(names) != 2 || names[0] != "a" || names[1] != "b" {
		t.Fatalf("Each: %v", names)
	}
	s.Kill9("a")
	if ws := a.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("a after Kill9: %v", a.ProcessState)
	}
	s.Stop("b", "not-there")
	if ws := b.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("b after Stop: %v", b.ProcessState)
	}
	stubborn := start(t, "sh", "-c", "trap '' TERM; sleep 60")
	time.Sleep(200 * time.Millisecond) // let the shell set its trap
	t0 := time.Now()
	TermWait(stubborn, 300*time.Millisecond)
	if ws := stubborn.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL || time.Since(t0) < 300*time.Millisecond {
		t.Fatalf("a process that ignores SIGTERM: %v after %v", stubborn.ProcessState, time.Since(t0))
	}
}

// TestCleanupStops: what the test leaves running is stopped at its end.
func TestCleanupStops(t *testing.T) {
	var c *exec.Cmd
	t.Run("leaves one", func(t *testing.T) {
		c = start(t, "sleep", "60")
		New(t).Add("left", c)
	})
	if c.ProcessState == nil || !c.ProcessState.Exited() && !c.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("process left by the subtest still runs: %v", c.ProcessState)
	}
}
