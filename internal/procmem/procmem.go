// Package procmem owns what the process does about its own resident
// memory: dropping the page-table entries of its executable's read-only
// pages that start-up touched and nothing uses again.
//
// haplane is one large static binary (etcd, client-go, gobgp). Package
// initialisation and the first requests fault in pages of code and
// read-only data all over it, and the kernel maps each fault's neighbours
// too (fault-around), so tens of MiB of clean file pages stay counted in
// the process's RSS long after start-up, though the work that stays (the
// load balancer, the health checks) touches a small part of them. The
// pages stay in the page cache, shared and droppable; unmapping them
// changes no byte the process reads: the next access faults the same page
// in again, from memory.
package procmem

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mapping is one line of /proc/self/maps.
type Mapping struct {
	Start, End uintptr
	Perms      string
	Path       string
}

// ParseMaps reads the mappings of a /proc/PID/maps text.
func ParseMaps(b []byte) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			return nil, fmt.Errorf("procmem: maps line %d: %d fields, want at least 5", n, len(f))
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("procmem: maps line %d: range %q", n, f[0])
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || e < s {
			return nil, fmt.Errorf("procmem: maps line %d: range %q", n, f[0])
		}
		m := Mapping{Start: uintptr(s), End: uintptr(e), Perms: f[1]}
		if len(f) >= 6 {
			m.Path = strings.Join(f[5:], " ")
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// ReadOnlyOf picks the mappings of the file exe that can never hold a
// private change: not writable. Dropping those loses nothing; a writable
// private mapping (the binary's data) may hold changes and is never picked.
func ReadOnlyOf(maps []Mapping, exe string) []Mapping {
	var out []Mapping
	for _, m := range maps {
		if m.Path == exe && len(m.Perms) >= 2 && m.Perms[0] == 'r' && m.Perms[1] == '-' {
			out = append(out, m)
		}
	}
	return out
}

// TrimExecutable drops the page-table entries of the running executable's
// read-only mappings (MADV_DONTNEED) and returns how many bytes of
// address space it covered.
func TrimExecutable() (uintptr, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("procmem: %w", err)
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("procmem: %w", err)
	}
	maps, err := ParseMaps(b)
	if err != nil {
		return 0, err
	}
	var n uintptr
	for _, m := range ReadOnlyOf(maps, exe) {
		// A raw system call: the range is not Go memory, so no []byte
		// stands for it.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.Start, m.End-m.Start, unix.MADV_DONTNEED); e != 0 {
			return n, fmt.Errorf("procmem: madvise %x-%x %s: %w", m.Start, m.End, m.Perms, e)
		}
		n += m.End - m.Start
	}
	return n, nil
}

// RSS is the process's resident set as /proc/self/status splits it, in
// bytes: anonymous and file pages.
type RSS struct{ Anon, File uint64 }

// ReadRSS reads RssAnon and RssFile of /proc/self/status.
func ReadRSS() (RSS, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return RSS{}, fmt.Errorf("procmem: %w", err)
	}
	return parseStatus(b), nil
}

func parseStatus(b []byte) RSS {
	var r RSS
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "RssAnon":
			r.Anon = kb << 10
		case "RssFile":
			r.File = kb << 10
		}
	}
	return r
}

// StartupDelay is how long TrimAfterStartup waits: the first health
// checks, TLS handshakes and API calls of a daemon are done by then.
const StartupDelay = 5 * time.Second

// TrimAfterStartup runs TrimExecutable once StartupDelay passed (unless
// ctx ends first) and logs the file pages before and after. A daemon calls
// it once it is ready.
func TrimAfterStartup(ctx context.Context, log *slog.Logger) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(StartupDelay):
	}
	before, _ := ReadRSS()
	if _, err := TrimExecutable(); err != nil {
		log.Warn("dropping the executable's start-up pages failed", "err", err)
		return
	}
	after, _ := ReadRSS()
	log.Info("executable's start-up pages dropped", "rss_file_before_mib", before.File>>20, "rss_file_after_mib", after.File>>20, "rss_anon_mib", after.Anon>>20)
}
