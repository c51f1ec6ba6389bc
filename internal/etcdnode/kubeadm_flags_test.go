package etcdnode

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/render"
	"go.etcd.io/etcd/pkg/v3/featuregate"
	"go.etcd.io/etcd/server/v3/features"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestEmbedConfigMatchesRenderedFlags: the member haplane embeds and the
// static pod `haplane render` writes are the same etcd. Each kubeadm flag
// of the rendered pod that has an embed field is read back and compared
// with what embedConfig sets, every server feature gate included.
func TestEmbedConfigMatchesRenderedFlags(t *testing.T) {
	c, err := config.Parse("haplane.yaml", config.Example(config.ExampleOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	node := c.EtcdMembers()[0]
	data, err := render.EtcdPod(c, node.Name, render.EtcdOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.Unmarshal(data, &pod); err != nil {
		t.Fatal(err)
	}
	flags := map[string]string{}
	for _, a := range pod.Spec.Containers[0].Command[1:] {
		k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok {
			t.Fatalf("flag %q has no value", a)
		}
		flags[k] = v
	}
	flag := func(name string) string {
		t.Helper()
		v, ok := flags[name]
		if !ok {
			t.Fatalf("rendered pod has no --%s", name)
		}
		return v
	}

	tls := newTestPKI(t).member(t, node.Name, node.Address)
	m, err := New(Config{Name: node.Name, DataDir: t.TempDir(), Address: node.Address, TLS: tls,
		InitialCluster: []Peer{{node.Name, PeerURLFor(node.Address, DefaultPeerPort)}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ec := m.embedConfig()

	if d, err := time.ParseDuration(flag("watch-progress-notify-interval")); err != nil || d != ec.WatchProgressNotifyInterval || d == 0 {
		t.Errorf("--watch-progress-notify-interval=%s (%v), embedded member has %v", flag("watch-progress-notify-interval"), err, ec.WatchProgressNotifyInterval)
	}
	// The rendered gates, parsed by etcd's own gate, against the member's:
	// every known gate must agree, so a gate set on one side only fails.
	rendered := features.NewDefaultServerFeatureGate("rendered", nil)
	if err := rendered.(featuregate.MutableFeatureGate).Set(flag("feature-gates")); err != nil {
		t.Fatalf("--feature-gates=%s: %v", flag("feature-gates"), err)
	}
	for f := range rendered.(featuregate.MutableFeatureGate).GetAll() {
		if rendered.Enabled(f) != ec.ServerFeatureGate.Enabled(f) {
			t.Errorf("feature gate %s: rendered %v, embedded %v", f, rendered.Enabled(f), ec.ServerFeatureGate.Enabled(f))
		}
	}
	if !ec.ServerFeatureGate.Enabled(features.InitialCorruptCheck) {
		t.Error("embedded member runs without InitialCorruptCheck")
	}
	if n, _ := strconv.ParseUint(flag("snapshot-count"), 10, 64); n != ec.SnapshotCount {
		t.Errorf("--snapshot-count=%s, embedded %d", flag("snapshot-count"), ec.SnapshotCount)
	}
	if flag("client-cert-auth") != "true" || !ec.ClientTLSInfo.ClientCertAuth ||
		flag("peer-client-cert-auth") != "true" || !ec.PeerTLSInfo.ClientCertAuth {
		t.Errorf("client cert auth: rendered %s/%s, embedded %v/%v", flag("client-cert-auth"), flag("peer-client-cert-auth"),
			ec.ClientTLSInfo.ClientCertAuth, ec.PeerTLSInfo.ClientCertAuth)
	}
	if len(ec.ListenMetricsUrls) != 1 || ec.ListenMetricsUrls[0].String() != flag("listen-metrics-urls") {
		t.Errorf("--listen-metrics-urls=%s, embedded %v", flag("listen-metrics-urls"), ec.ListenMetricsUrls)
	}
	if flag("initial-cluster-token") == "" || flag("name") != ec.Name {
		t.Errorf("--name=%s, embedded %s", flag("name"), ec.Name)
	}
	// etcd itself accepts the embedded config as it would the flags.
	if err := ec.Validate(); err != nil {
		t.Fatalf("embedded config does not validate: %v", err)
	}
}
