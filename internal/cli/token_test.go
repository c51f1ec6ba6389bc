package cli

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/agent"
)

// TestTokenCreateIsHonouredByTheAgent: a token made by `haplane token
// create`'s store is accepted by the agent's join server, through a real
// etcd cluster (three in-process members on loopback), and its use shows in
// `haplane token list`'s store.
func TestTokenCreateIsHonouredByTheAgent(t *testing.T) {
	// A per-node token file no agent reads is not offered any more.
	if code, _, stderr := run(t, "token", "create", "--store", "file"); code != ExitUsage || !strings.Contains(stderr, "unknown flag: --store") {
		t.Fatalf("token create --store file: exit %d, %q; want a usage error", code, stderr)
	}

	c, hosts := statusTestCluster(t, "127.0.8.")
	startStatusEtcd(t, c, hosts)
	a := &app{}
	st, closeStore, err := a.tokenStore(c, filepath.Join(hosts, "cp1", "pki"))
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	tok, err := st.Create(c.Name, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The join server of another node's agent.
	jp, closeJoin, err := agent.NewJoinPart(c, agent.Options{ConfigPath: filepath.Join(t.TempDir(), "haplane.yaml")}, filepath.Join(hosts, "cp2", "pki"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeJoin()
	if err := jp.Server.Tokens.Check(tok, c.Name, time.Now()); err != nil {
		t.Fatalf("cp2's join server does not honour a token made with cp1's token store: %v", err)
	}
	if err := jp.Server.Tokens.Consume(tok, c.Name, "cp4@test", time.Now()); err != nil {
		t.Fatal(err)
	}
	list, err := st.List()
	if err != nil || len(list) != 1 || !list[0].Used || list[0].UsedBy != "cp4@test" {
		t.Fatalf("token list after the agent used the token: %+v, %v", list, err)
	}
}
