package render

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestEtcdPodGoldenAndStrict(t *testing.T) {
	for _, tc := range kubeadmCases {
		t.Run(tc.name, func(t *testing.T) {
			c := exampleCluster(t, tc.opts)
			members := c.EtcdMembers()
			for _, m := range members {
				data, err := EtcdPod(c, m.Name, EtcdOptions{})
				if err != nil {
					t.Fatal(err)
				}
				golden(t, filepath.Join("etcd", tc.name, m.Name, "etcd.yaml"), data)
				var pod corev1.Pod
				if err := yaml.UnmarshalStrict(data, &pod); err != nil {
					t.Fatalf("manifest does not decode strictly as a v1.Pod: %v", err)
				}
				cmd := pod.Spec.Containers[0].Command
				for _, want := range []string{
					"--name=" + m.Name,
					"--client-cert-auth=true", "--peer-client-cert-auth=true",
					"--snapshot-count=10000", "--listen-metrics-urls=http://127.0.0.1:2381",
					"--initial-cluster-state=new",
					"--advertise-client-urls=https://" + m.Address + ":2379",
				} {
					if !slices.Contains(cmd, want) {
						t.Errorf("%s: command lacks %s", m.Name, want)
					}
				}
				// The initial cluster names every member once.
				for _, f := range cmd {
					if v, ok := strings.CutPrefix(f, "--initial-cluster="); ok && len(strings.Split(v, ",")) != len(members) {
						t.Errorf("initial cluster %s, want %d members", v, len(members))
					}
				}
				if pod.Spec.Containers[0].LivenessProbe.HTTPGet.Path != "/livez" || pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Path != "/readyz" {
					t.Error("probes do not use /livez and /readyz")
				}
			}
		})
	}
	c := exampleCluster(t, kubeadmCases[1].opts)
	if _, err := EtcdPod(c, "cp1", EtcdOptions{}); err == nil {
		t.Error("external topology: a control-plane node got an etcd pod")
	}
}

func TestEtcdUnitGolden(t *testing.T) {
	for _, tc := range kubeadmCases {
		c := exampleCluster(t, tc.opts)
		m := c.EtcdMembers()[0]
		data, err := EtcdUnit(c, m.Name, EtcdOptions{})
		if err != nil {
			t.Fatal(err)
		}
		golden(t, filepath.Join("etcd", tc.name, m.Name, "haplane-etcd.service"), data)
		if !strings.Contains(string(data), "ExecStart=/usr/local/bin/haplane etcd run --config /etc/haplane/haplane.yaml --node "+m.Name) {
			t.Errorf("unit:\n%s", data)
		}
	}
	if _, err := EtcdUnit(exampleCluster(t, kubeadmCases[0].opts), "nope", EtcdOptions{}); err == nil {
		t.Error("unknown node accepted")
	}
}
