package lb

import (
	"slices"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/config"
)

func TestConfigFromCluster(t *testing.T) {
	file := `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: t
controlPlaneEndpoint: {vip: 10.77.4.100, port: 9443, apiServerPort: 7443}
vip: {interface: eth0, virtualRouterID: 7}
loadBalancer: {algorithm: leastconn, connectTimeout: 300ms, drain: 5s, loops: 3}
nodes:
  - {name: a, address: 10.77.4.11}
  - {name: b, address: 10.77.4.12}
`
	c, err := config.Parse("haplane.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		listen, front string
	}{
		{"", "10.77.4.100:9443"},
		{"0.0.0.0:9443", "0.0.0.0:9443"},
	}
	for _, tt := range tests {
		got := ConfigFromCluster(c, tt.listen)
		if !slices.Equal(got.Frontends, []string{tt.front}) {
			t.Errorf("listen %q: frontends %v, want %s", tt.listen, got.Frontends, tt.front)
		}
		if !slices.Equal(got.Backends, []string{"10.77.4.11:7443", "10.77.4.12:7443"}) {
			t.Errorf("backends %v", got.Backends)
		}
		if got.Policy != "leastconn" || got.ConnectTimeout != 300*time.Millisecond || got.Drain != 5*time.Second || got.Loops != 3 || !got.FreeBind {
			t.Errorf("settings %+v", got)
		}
		if _, err := New(got); err != nil {
			t.Errorf("New: %v", err)
		}
	}
}
