// Package procmem owns what a long-running haplane process does about its
// own memory: dropping the pages of its executable that only start-up
// used from its resident set.
package procmem

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Most of the resident memory of `haplane lb run` or `haplane agent` is
// not theirs: of ~58 MiB, 45 MiB are pages of the executable file (one
// binary holds etcd, the Kubernetes clients and every command; package
// initialisation and the runtime's function tables touch much of its
// text, read-only data and pclntab), 8-12 MiB anonymous (heap, stacks).
// Serving touches a few MiB of that code. ReleaseStartupPages drops the
// executable's pages from the process's page tables once it serves; the
// ones in use come back at their next touch as minor faults from the page
// cache, which keeps them all along (nothing is read from disk again, and
// other processes of the same binary keep theirs). The kernel would
// reclaim those pages under memory pressure anyway; this makes the
// process's RSS say what it uses.

// ReleaseStartupPages unmaps the resident pages of the executable's
// read-only mappings (text, read-only data) from the process, and reports
// how many bytes were resident there. A mapping with any private
// (anonymous, copy-on-write) page is left alone: only pages the file can
// give back are dropped, so nothing the process wrote is lost.
func ReleaseStartupPages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("procmem: release startup pages: %w", err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("procmem: release startup pages: %w", err)
	}
	defer f.Close()
	type mapping struct {
		start, end uint64
		rss, anon  int64 // kB
		ours       bool
	}
	var (
		cur      mapping
		released int64
		errs     []error
	)
	flush := func() {
		if !cur.ours || cur.anon != 0 || cur.rss == 0 {
			return
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(cur.start), uintptr(cur.end-cur.start), unix.MADV_DONTNEED); e != 0 {
			errs = append(errs, fmt.Errorf("madvise %x-%x: %w", cur.start, cur.end, e))
			return
		}
		released += cur.rss << 10
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		fields := bytes.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if k := fields[0]; k[len(k)-1] != ':' {
			// A mapping's header: start-end perms offset dev inode [path].
			flush()
			cur = mapping{}
			se := bytes.SplitN(fields[0], []byte("-"), 2)
			if len(se) != 2 || len(fields) < 6 {
				continue
			}
			cur.start, _ = strconv.ParseUint(string(se[0]), 16, 64)
			cur.end, _ = strconv.ParseUint(string(se[1]), 16, 64)
			perms := fields[1]
			cur.ours = string(fields[5]) == exe && len(perms) >= 2 && perms[1] != 'w' && cur.end > cur.start
			continue
		}
		if !cur.ours || len(fields) < 2 {
			continue
		}
		switch string(fields[0]) {
		case "Rss:":
			cur.rss, _ = strconv.ParseInt(string(fields[1]), 10, 64)
		case "Anonymous:":
			cur.anon, _ = strconv.ParseInt(string(fields[1]), 10, 64)
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return released, fmt.Errorf("procmem: release startup pages: %w", err)
	}
	if len(errs) > 0 {
		return released, fmt.Errorf("procmem: release startup pages: %w", errors.Join(errs...))
	}
	return released, nil
}

// ReleaseAfter calls ReleaseStartupPages once, d after it is called,
// unless ctx ends first; it logs the outcome. Long-running commands start
// it when they serve.
func ReleaseAfter(ctx context.Context, d time.Duration, log *slog.Logger) {
	go func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := ReleaseStartupPages()
		if err != nil {
			log.Warn("procmem: release startup pages", "err", err)
			return
		}
		log.Debug("procmem: released the executable's start-up pages", "bytes", n)
	}()
}
