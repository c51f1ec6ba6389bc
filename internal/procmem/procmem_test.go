package procmem

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// fileRSS is the test process's resident file-backed memory, in KiB.
func fileRSS(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		t.Skipf("no /proc/self/smaps_rollup (not Linux, or an old kernel): %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 2 && fields[0] == "Pss_File:" {
			n, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Pss_File in smaps_rollup")
	return 0
}

// TestReleaseStartupPages drops the test binary's pages: it reports what
// it dropped, the file-backed resident set shrinks by about that much, and
// the code still runs afterwards (the pages fault back in).
func TestReleaseStartupPages(t *testing.T) {
	before := fileRSS(t)
	n, err := ReleaseStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	after := fileRSS(t)
	if n <= 0 {
		t.Fatalf("released %d bytes; the test binary has resident text", n)
	}
	if after >= before {
		t.Errorf("file-backed RSS %d KiB before, %d KiB after releasing %d KiB; want less", before, after, n>>10)
	}
	// The process goes on: code and read-only data come back on use.
	if s := strconv.Itoa(12345) + strings.Repeat("x", 3); s != "12345xxx" {
		t.Fatalf("after the release: %q", s)
	}
	if n2, err := ReleaseStartupPages(); err != nil || n2 <= 0 || n2 >= n {
		t.Errorf("a second release: %d bytes, %v; want fewer than the first's %d (only what ran since came back)", n2, err, n)
	}
}
