package health

import (
	"testing"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/testutil/testcerts"
)

func TestConfigFromCluster(t *testing.T) {
	file := `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: t
controlPlaneEndpoint: {vip: 10.77.4.100}
vip: {interface: eth0, virtualRouterID: 7}
loadBalancer:
  healthCheck: {path: /healthz, interval: 150ms, timeout: 400ms, fall: 4, rise: 3}
nodes:
  - {name: a, address: 10.77.4.11}
`
	c, err := config.Parse("haplane.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	pki := testcerts.NewPair(t, "backend", "backend", "127.0.0.1")
	got := ConfigFromCluster(c, pki.Pool)
	want := CheckerConfig{
		Probe:    ProbeConfig{Kind: KindHTTPS, Path: "/healthz", Timeout: 400 * time.Millisecond, RootCAs: pki.Pool},
		Interval: 150 * time.Millisecond, Fall: 4, Rise: 3,
	}
	if got.Probe.Path != want.Probe.Path || got.Probe.Timeout != want.Probe.Timeout || got.Probe.RootCAs != want.Probe.RootCAs ||
		got.Probe.Kind != want.Probe.Kind || got.Interval != want.Interval || got.Fall != want.Fall || got.Rise != want.Rise {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := NewChecker(got); err != nil {
		t.Errorf("NewChecker: %v", err)
	}
}
