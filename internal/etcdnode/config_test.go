package etcdnode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := TLSFiles{CertFile: f, KeyFile: f, PeerCertFile: f, PeerKeyFile: f, CAFile: f}
	good := func() Config {
		return Config{Name: "cp1", DataDir: dir, Address: "10.0.0.1", TLS: files,
			InitialCluster: []Peer{{"cp1", "https://10.0.0.1:2380"}, {"cp2", "https://10.0.0.2:2380"}}}
	}
	if err := good().withDefaults().validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	d := good().withDefaults()
	if d.SnapshotCount != 10000 || d.MetricsURL != "http://127.0.0.1:2381" || d.ClientPort != 2379 || d.PeerPort != 2380 ||
		d.QuotaBackendBytes != 2<<30 || d.Heartbeat != 100*time.Millisecond || d.ElectionTimeout != time.Second || d.ClusterState != StateNew {
		t.Errorf("defaults: %+v", d)
	}
	if d.ClientURL() != "https://10.0.0.1:2379" || (Config{Address: "fd00::1", PeerPort: 2380}).PeerURL() != "https://[fd00::1]:2380" {
		t.Errorf("URLs: %s", d.ClientURL())
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"bad name", func(c *Config) { c.Name = "CP_1" }, "name"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "dataDir"},
		{"bad address", func(c *Config) { c.Address = "host" }, "address"},
		{"port clash", func(c *Config) { c.PeerPort = 2379 }, "both 2379"},
		{"port range", func(c *Config) { c.ClientPort = 70000 }, "clientPort"},
		{"bad state", func(c *Config) { c.ClusterState = "old" }, "clusterState"},
		{"self missing", func(c *Config) { c.InitialCluster = c.InitialCluster[1:] }, "does not list this member"},
		{"self URL differs", func(c *Config) { c.InitialCluster[0].PeerURL = "https://10.0.0.9:2380" }, "advertises"},
		{"duplicate peer", func(c *Config) { c.InitialCluster[1] = c.InitialCluster[0] }, "listed twice"},
		{"http peer", func(c *Config) { c.InitialCluster[1].PeerURL = "http://10.0.0.2:2380" }, "want https"},
		{"no cert", func(c *Config) { c.TLS.PeerKeyFile = "" }, "tls.peerKeyFile is required"},
		{"missing cert", func(c *Config) { c.TLS.CAFile = filepath.Join(dir, "nope") }, "tls.caFile"},
		{"bad metrics", func(c *Config) { c.MetricsURL = "https://127.0.0.1:2381" }, "metricsURL"},
		{"election", func(c *Config) { c.ElectionTimeout = 200 * time.Millisecond }, "electionTimeout"},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, "logLevel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			tt.mod(&c)
			err := c.withDefaults().validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate = %v, want an error about %q", err, tt.want)
			}
		})
	}
	// Every problem is reported at once.
	c := good()
	c.Name, c.DataDir, c.Address = "", "", ""
	err := c.withDefaults().validate()
	for _, w := range []string{"name", "dataDir", "address"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("combined error lacks %q: %v", w, err)
		}
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New accepted an empty config")
	}
}

func TestStartFailureCleansUp(t *testing.T) {
	// A member whose peers never come cannot get ready; Start gives up at
	// its deadline, and the ports are free again for the next attempt.
	tc := newTestCluster(t, 3)
	o := tc.node("m0").Member
	m, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithTimeout(2 * time.Second)
	defer cancel()
	if err := m.Start(ctx); err == nil {
		m.Stop()
		t.Fatal("a member of a 3-member cluster got ready alone")
	}
	if m.Ready() || m.ID() != 0 {
		t.Fatal("failed member reports ready")
	}
	for _, u := range []int{o.ClientPort, o.PeerPort} {
		l, err := listenTCP(o.Address, u)
		if err != nil {
			t.Fatalf("port %d still held after a failed start: %v", u, err)
		}
		l.Close()
	}
}
