// Package testproc keeps the processes a test started, by name (an etcd
// member on a namespace host, a member on loopback), and stops them by
// their PID only: SIGKILL for a crash, SIGTERM with a grace period for a
// clean stop, and every one left at the test's end. It never looks for
// processes by name, so it cannot stop one it did not start. Only tests
// import it.
package testproc

import (
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Grace is how long Stop waits after SIGTERM before SIGKILL: an etcd
// member flushes its WAL and leaves in well under that.
const Grace = 10 * time.Second

// Set is a test's started processes by name. It is safe for concurrent use.
type Set struct {
	t     testing.TB
	mu    sync.Mutex // protects procs
	procs map[string]*exec.Cmd
}

// New returns an empty Set whose processes are stopped when the test ends
// (t.Cleanup: what the test registers after New is cleaned up first).
func New(t testing.TB) *Set {
	s := &Set{t: t, procs: map[string]*exec.Cmd{}}
	t.Cleanup(func() { s.Stop() })
	return s
}

// Add records cmd, already started, under name.
func (s *Set) Add(name string, cmd *exec.Cmd) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs[name] = cmd
}

// Each calls f for every running process, in name order.
func (s *Set) Each(f func(name string, cmd *exec.Cmd)) {
	s.mu.Lock()
	names := make([]string, 0, len(s.procs))
	for n := range s.procs {
		names = append(names, n)
	}
	procs := make(map[string]*exec.Cmd, len(s.procs))
	for n, c := range s.procs {
		procs[n] = c
	}
	s.mu.Unlock()
	slices.Sort(names)
	for _, n := range names {
		f(n, procs[n])
	}
}

// Kill9 sends SIGKILL to the named process and reaps it; the test fails
// if there is none of that name.
func (s *Set) Kill9(name string) {
	s.t.Helper()
	cmd := s.take(name)
	if cmd == nil {
		s.t.Fatalf("testproc: no process %s", name)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

// Stop stops the named processes (every one when none is named) with
// TermWait, concurrently, and returns when all have exited. A name that
// has no process is skipped.
func (s *Set) Stop(names ...string) {
	s.mu.Lock()
	var stop []*exec.Cmd
	for n, cmd := range s.procs {
		if len(names) == 0 || slices.Contains(names, n) {
			stop = append(stop, cmd)
			delete(s.procs, n)
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, cmd := range stop {
		wg.Add(1)
		go func() { defer wg.Done(); TermWait(cmd, Grace) }()
	}
	wg.Wait()
}

// StopOne is Stop of one process that must be there.
func (s *Set) StopOne(name string) {
	s.t.Helper()
	cmd := s.take(name)
	if cmd == nil {
		s.t.Fatalf("testproc: no process %s", name)
	}
	TermWait(cmd, Grace)
}

func (s *Set) take(name string) *exec.Cmd {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := s.procs[name]
	delete(s.procs, name)
	return cmd
}

// TermWait sends SIGTERM to cmd's process and waits for it to exit; after
// grace it sends SIGKILL (a process stuck in its shutdown must not hang
// the test) and waits again. cmd must have been started and not waited
// for.
func TermWait(cmd *exec.Cmd, grace time.Duration) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}
