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
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("speaker: list threads: %w", err)
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("speaker: set nice %d: %w", nice, err)
	}
	return nil
}
