package elect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// Command is a process that runs only while its candidate leads: the
// work of `haplane elect -- COMMAND`.
type Command struct {
	// Args is the command and its arguments.
	Args []string
	// Grace is the time between SIGTERM and SIGKILL when leadership ends.
	Grace time.Duration
	// Log, when set, says when the command starts, exits and is stopped.
	Log interface {
		Info(string, ...any)
		Warn(string, ...any)
	}
	// Stdin, Stdout and Stderr are the command's (nil: the null device).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Env is added to the process's environment, after the fencing token
	// (HAPLANE_FENCING_TOKEN) and identity (HAPLANE_ELECT_IDENTITY).
	Env []string
}

// Run runs the command for term t until it exits or ctx ends; then it
// stops it: SIGTERM to its process group, SIGKILL after Grace. It returns
// the command's exit code (127 when it did not start, 128+signal when a
// signal ended it) and, when ctx ended it, ctx's cause.
func (c Command) Run(ctx context.Context, t Term) (int, error) {
	if len(c.Args) == 0 {
		return 127, errors.New("elect: no command to run")
	}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	started := make(chan *exec.Cmd, 1)
	go func() {
		// Pdeathsig is tied to the thread that started the child: keep
		// this goroutine on its thread for the child's whole life, so the
		// kernel kills the command if elect dies.
		runtime.LockOSThread()
		cmd := exec.Command(c.Args[0], c.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Stdin, c.Stdout, c.Stderr
		cmd.Env = append(os.Environ(), "HAPLANE_FENCING_TOKEN="+strconv.FormatInt(t.Token, 10), "HAPLANE_ELECT_IDENTITY="+t.Identity)
		cmd.Env = append(cmd.Env, c.Env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- nil
			done <- result{code: 127, err: fmt.Errorf("elect: start %s: %w", c.Args[0], err)}
			return
		}
		started <- cmd
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code, err = ee.ExitCode(), nil
			if code < 0 {
				code = 128 + int(syscall.SIGKILL)
			}
		}
		done <- result{code: code, err: err}
	}()
	cmd := <-started
	if cmd == nil {
		r := <-done
		return r.code, r.err
	}
	c.info("command started", "pid", cmd.Process.Pid, "token", t.Token)
	select {
	case r := <-done:
		c.info("command exited", "code", r.code)
		return r.code, r.err
	case <-ctx.Done():
	}
	if c.Log != nil {
		c.Log.Warn("stopping the command", "pid", cmd.Process.Pid, "why", context.Cause(ctx))
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	timer := time.NewTimer(c.Grace)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.code, context.Cause(ctx)
	case <-timer.C:
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	r := <-done
	return r.code, context.Cause(ctx)
}

func (c Command) info(msg string, args ...any) {
	if c.Log != nil {
		c.Log.Info(msg, args...)
	}
}

// CommandMargin checks a command runner's lease TTL and grace, and returns
// the margin before the lease's expiry at which a leader must notice it
// lost leadership: the grace plus 500ms, so the command is gone before
// another candidate can start its copy.
func CommandMargin(ttl, grace time.Duration) (time.Duration, error) {
	if ttl < 2*time.Second {
		return 0, fmt.Errorf("--ttl %s: at least 2s", ttl)
	}
	margin := grace + 500*time.Millisecond
	if margin > ttl/2 {
		return 0, fmt.Errorf("--grace %s plus 500ms must be at most half of --ttl %s (the lease is renewed every third of it)", grace, ttl)
	}
	return margin, nil
}
