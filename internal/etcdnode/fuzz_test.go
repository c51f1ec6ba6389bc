package etcdnode

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerifySnapshot feeds arbitrary files to the snapshot check, both as
// they are and with a valid SHA-256 trailer appended (so the database check
// behind the hash is reached too). It must return an error or a result,
// never panic or accept a file it cannot read.
func FuzzVerifySnapshot(f *testing.F) {
	f.Add([]byte{}, false)
	f.Add(make([]byte, 512), true)
	f.Add([]byte("not a database"), true)
	f.Fuzz(func(t *testing.T, data []byte, withHash bool) {
		if withHash {
			pad := (512 - len(data)%512) % 512
			data = append(data, make([]byte, pad)...)
			sum := sha256.Sum256(data)
			data = append(data, sum[:]...)
		}
		p := filepath.Join(t.TempDir(), "snap.db")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		info, err := VerifySnapshot(p)
		if err == nil && info.Size != int64(len(data)) {
			t.Fatalf("accepted with size %d, file has %d", info.Size, len(data))
		}
	})
}
