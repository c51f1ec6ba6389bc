package health

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/haplane/haplane/internal/testutil/testcerts"
)

// TestCheckerReconfigure changes the interval and fall of a running
// checker on a fake clock: the target keeps its status through the change
// (no event), then is probed at the new rate and judged by the new fall.
func TestCheckerReconfigure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var healthy atomic.Bool
		healthy.Store(true)
		var probes atomic.Int32
		var mu sync.Mutex
		var changes []Status
		c, err := NewChecker(CheckerConfig{
			Interval: 100 * time.Millisecond, Fall: 5, Rise: 2,
			ProbeFunc: func(ctx context.Context, _ Target) Result {
				probes.Add(1)
				if healthy.Load() {
					return Result{OK: true}
				}
				return Result{Err: errors.New("boom")}
			},
			OnChange: func(ch Change) { mu.Lock(); changes = append(changes, ch.To); mu.Unlock() },
		})
		if err != nil {
			t.Fatal(err)
		}
		c.SetTargets([]Target{{Addr: "a:1"}})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		time.Sleep(time.Second + time.Millisecond) // probes at 0..1000ms
		if n := probes.Load(); n != 11 {
			t.Fatalf("%d probes in the first second at 100ms, want 11", n)
		}

		if err := c.Reconfigure(CheckerConfig{Interval: 20 * time.Millisecond, Fall: 1, Rise: 2}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		probes.Store(0)
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		if n := probes.Load(); n < 9 || n > 11 {
			t.Errorf("%d probes in 200ms at 20ms, want 10", n)
		}
		if c.Status("a:1") != Up {
			t.Fatalf("status %v after reconfigure, want up", c.Status("a:1"))
		}
		// Fall 1: down on the first failure, within one 20ms interval.
		healthy.Store(false)
		time.Sleep(21 * time.Millisecond)
		synctest.Wait()
		if c.Status("a:1") != Down {
			t.Errorf("status %v 21ms into failing with fall 1, want down", c.Status("a:1"))
		}
		if got := c.Config(); got.Interval != 20*time.Millisecond || got.Fall != 1 || got.OnChange == nil {
			t.Errorf("config after reconfigure: %+v", got)
		}
		// An invalid configuration changes nothing.
		if err := c.Reconfigure(CheckerConfig{Interval: -1}); err == nil {
			t.Error("negative interval accepted")
		}
		if c.Config().Interval != 20*time.Millisecond {
			t.Error("a refused reconfigure changed the interval")
		}
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(changes) != 2 || changes[0] != Up || changes[1] != Down {
			t.Errorf("changes %v, want [up down]: the reconfigure itself must not change a status", changes)
		}
	})
}

// TestCheckerReconfigureProbe switches the probed path of a real HTTPS
// backend: a path it does not serve takes it down, the right one brings it
// back.
func TestCheckerReconfigureProbe(t *testing.T) {
	pki := testcerts.NewPair(t, "backend", "backend", "127.0.0.1")
	b := newBackend(t, pki)
	base := CheckerConfig{Probe: ProbeConfig{RootCAs: pki.Pool}, Interval: 50 * time.Millisecond, Fall: 2, Rise: 2}
	c, changes, _ := runChecker(t, base, Target{Addr: b.addr()})
	wait := func(want Status) { t.Helper(); nextChange(t, changes, want) }
	wait(Up)
	next := base
	next.Probe.Path = "/nope" // the backend answers 404
	if err := c.Reconfigure(next); err != nil {
		t.Fatal(err)
	}
	wait(Down)
	next.Probe.Path = "/healthz"
	if err := c.Reconfigure(next); err != nil {
		t.Fatal(err)
	}
	wait(Up)
}
