package agent

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/haplane/haplane/internal/config"
)

// TestAPIServerCA: --ca, else the cluster CA when present, else no pool;
// a file that holds no certificate is an error naming it.
func TestAPIServerCA(t *testing.T) {
	_, root := testPKI(t, "127.0.77.100", "127.0.77.1")
	ca := filepath.Join(root, "cp1", "pki", "ca.crt")
	bad := filepath.Join(t.TempDir(), "bad.crt")
	if err := os.WriteFile(bad, []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, caFile, wantPath string
		wantPool, wantErr           bool
	}{
		{name: "cluster CA", dir: filepath.Dir(ca), wantPath: ca, wantPool: true},
		{name: "--ca", dir: t.TempDir(), caFile: ca, wantPath: ca, wantPool: true},
		{name: "none", dir: t.TempDir()},
		{name: "not PEM", dir: t.TempDir(), caFile: bad, wantErr: true},
	}
	for _, tt := range tests {
		c := &config.Cluster{}
		c.Certificates.Dir = tt.dir
		pool, path, err := APIServerCA(c, tt.caFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if (err != nil) != tt.wantErr || (pool != nil) != tt.wantPool || path != tt.wantPath {
			t.Errorf("%s: pool %v, path %q, err %v", tt.name, pool != nil, path, err)
		}
	}
}
