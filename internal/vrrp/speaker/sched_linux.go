//go:build linux

package speaker

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// RaisePriority sets the nice value of every thread of the process (Linux
// keeps it per thread; threads the Go runtime starts later inherit it from
// the thread that creates them). A speaker that gets no CPU on a loaded
// node misses adverts and the VIP flaps, which is why keepalived runs its
// VRRP process at real-time priority; a strong nice value is the gentler
// equivalent for a process that also runs other parts. Needs
// CAP_SYS_NICE for negative values.
func RaisePriority(nice int) error {
	// The runtime may start threads while this runs, from threads not yet
	// adjusted; pass again until a pass finds no thread left to adjust.
	done := map[int]bool{}
	for pass := 0; pass < 20; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("speaker: list threads: %w", err)
		}
		changed := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			// The raw syscall returns 20 - nice.
			if cur, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil && 20-cur == nice && done[tid] {
				continue
			}
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // the thread exited
				}
				return fmt.Errorf("speaker: set nice %d on thread %d: %w", nice, tid, err)
			}
			done[tid], changed = true, true
		}
		if !changed {
			return nil
		}
	}
	return nil
}
