package procmem

import (
	"crypto/sha256"
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestParseMaps(t *testing.T) {
	const maps = `00400000-00402000 r--p 00000000 fd:01 1234   /usr/bin/haplane
00402000-0270d000 r-xp 00002000 fd:01 1234   /usr/bin/haplane
0270d000-051e4000 r--p 0230d000 fd:01 1234   /usr/bin/haplane
051e4000-052b3000 rw-p 04de3000 fd:01 1234   /usr/bin/haplane
052b3000-07300000 rw-p 00000000 00:00 0
7f0000000000-7f0000001000 r--p 00000000 fd:01 99     /lib/with space/x.so
7ffd000-7ffe000 r-xp 00000000 00:00 0                  [vdso]
`
	got, err := ParseMaps([]byte(maps))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 || got[1].Start != 0x402000 || got[1].End != 0x270d000 || got[1].Perms != "r-xp" || got[5].Path != "/lib/with space/x.so" || got[4].Path != "" {
		t.Fatalf("ParseMaps = %+v", got)
	}
	ro := ReadOnlyOf(got, "/usr/bin/haplane")
	if len(ro) != 3 {
		t.Fatalf("ReadOnlyOf picked %d mappings, want the 3 non-writable ones of the binary: %+v", len(ro), ro)
	}
	for _, m := range ro {
		if strings.Contains(m.Perms, "w") {
			t.Errorf("picked a writable mapping %+v: its private changes would be lost", m)
		}
	}
	for _, bad := range []string{"00400000 r--p 0 fd:01 1", "zz-00400000 r--p 0 fd:01 1", "00500000-00400000 r--p 0 fd:01 1", "1-2 r--p"} {
		if _, err := ParseMaps([]byte(bad + "\n")); err == nil {
			t.Errorf("ParseMaps(%q): no error", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	r := parseStatus([]byte("Name:\tx\nVmRSS:\t  300 kB\nRssAnon:\t    100 kB\nRssFile:\t  200 kB\nRssShmem:\t 0 kB\n"))
	if r.Anon != 100<<10 || r.File != 200<<10 {
		t.Fatalf("parseStatus = %+v", r)
	}
}

// TestTrimExecutable drops this test binary's read-only pages for real:
// its file pages fall, and code and read-only data still work after it
// (they fault back in from the page cache, unchanged).
func TestTrimExecutable(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only: /proc/self/maps and madvise")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	before, err := ReadRSS()
	if err != nil {
		t.Fatal(err)
	}
	sumBefore := sha256.Sum256([]byte(exe))
	n, err := TrimExecutable()
	if err != nil {
		t.Fatal(err)
	}
	after, err := ReadRSS()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no read-only mapping of the executable found")
	}
	t.Logf("trimmed %d MiB of address space: file pages %d -> %d KiB", n>>20, before.File>>10, after.File>>10)
	if after.File >= before.File {
		t.Errorf("file pages did not fall: %d -> %d KiB", before.File>>10, after.File>>10)
	}
	// Read-only data (the constant tables of sha256) and code run as before.
	if sha256.Sum256([]byte(exe)) != sumBefore {
		t.Error("sha256 changed after the trim")
	}
}
