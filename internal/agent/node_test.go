package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/haplane/haplane/internal/config"
)

func TestRestartOnlyNamesWhatAReloadDoesNotApply(t *testing.T) {
	load := func(edit func(string) string) *config.Cluster {
		t.Helper()
		c, err := config.Parse("haplane.yaml", []byte(edit(string(config.Example(config.ExampleOptions{})))))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	same := func(s string) string { return s }
	base := load(same)
	if got := restartOnly(base, load(same)); len(got) != 0 {
		t.Errorf("no change: %v", got)
	}
	addNode := func(s string) string {
		return strings.Replace(s, "    address: 10.77.0.13\n", "    address: 10.77.0.13\n  - name: cp4\n    address: 10.77.0.14\n", 1)
	}
	if got := restartOnly(base, load(addNode)); len(got) != 0 {
		t.Errorf("a new node is applied in place, got %v", got)
	}
	// The VIP's and the load balancer's settings are the parts' to apply
	// (agent.LBPart.Reload, agent.VIPPart.Reload).
	reloadable := func(s string) string {
		s = strings.Replace(s, "advertInterval: 100ms", "advertInterval: 200ms", 1)
		s = strings.Replace(s, "algorithm: roundrobin", "algorithm: leastconn", 1)
		return strings.Replace(s, "    interval: 200ms", "    interval: 100ms", 1)
	}
	if got := restartOnly(base, load(reloadable)); len(got) != 0 {
		t.Errorf("vip and loadBalancer changes: %v, want none left for a restart", got)
	}
	subnet := func(s string) string {
		return strings.Replace(s, "serviceSubnet: 10.96.0.0/12", "serviceSubnet: 10.97.0.0/16", 1)
	}
	if got := restartOnly(base, load(subnet)); !slices.Equal(got, []string{"networking"}) {
		t.Errorf("service subnet changed: %v, want [networking]", got)
	}
}

// TestFoldersDefaults: unset, the socket is STATE-DIR/agent.sock (where
// `haplane maintenance` and the lab look) and the PKI folder is the
// cluster file's; set, the options win.
func TestFoldersDefaults(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	c := &config.Cluster{}
	c.Certificates.Dir = "/etc/kubernetes/pki"
	for _, tc := range []struct {
		o         Options
		pki, sock string
	}{
		{Options{StateDir: state}, "/etc/kubernetes/pki", filepath.Join(state, "agent.sock")},
		{Options{StateDir: state, PKIDir: "/p", APISocket: "/s.sock"}, "/p", "/s.sock"},
	} {
		pki, sock, err := tc.o.folders(c)
		if err != nil {
			t.Fatal(err)
		}
		if pki != tc.pki || sock != tc.sock {
			t.Errorf("folders(%+v) = %s, %s; want %s, %s", tc.o, pki, sock, tc.pki, tc.sock)
		}
	}
	if fi, err := os.Stat(state); err != nil || !fi.IsDir() {
		t.Errorf("state folder not made: %v", err)
	}
}
