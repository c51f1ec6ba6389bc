package render

import (
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/haplane/haplane/internal/config"
)

func TestAgentPodGoldenAndStrict(t *testing.T) {
	for _, tc := range kubeadmCases {
		c := exampleCluster(t, tc.opts)
		data, err := AgentPod(c, "cp2", AgentOptions{})
		if err != nil {
			t.Fatal(err)
		}
		golden(t, filepath.Join("agent", tc.name, "haplane-agent.yaml"), data)
		// Strict decoding as a v1.Pod: an unknown or misplaced field fails.
		var pod corev1.Pod
		if err := yaml.UnmarshalStrict(data, &pod); err != nil {
			t.Fatalf("manifest does not decode strictly as a v1.Pod: %v", err)
		}
		ctr := pod.Spec.Containers[0]
		if !pod.Spec.HostNetwork || len(ctr.SecurityContext.Capabilities.Add) != 2 {
			t.Errorf("pod lacks host network or capabilities: %+v", pod.Spec)
		}
		if got := strings.Join(ctr.Command, " "); !strings.Contains(got, "--node cp2") || !strings.Contains(got, "--config /etc/haplane/haplane.yaml") {
			t.Errorf("command = %s", got)
		}
		mounts := map[string]bool{}
		for _, m := range ctr.VolumeMounts {
			mounts[m.MountPath] = true
		}
		if !mounts["/etc/kubernetes/pki"] || !mounts["/etc/haplane/haplane.yaml"] || mounts["/var/lib/etcd"] != (tc.name == "stacked") {
			t.Errorf("mounts = %v", mounts)
		}
	}
}

func TestAgentUnitGolden(t *testing.T) {
	for _, tc := range kubeadmCases {
		data, err := AgentUnit(exampleCluster(t, tc.opts), "cp1", AgentOptions{})
		if err != nil {
			t.Fatal(err)
		}
		golden(t, filepath.Join("agent", tc.name, "haplane-agent.service"), data)
		for _, want := range []string{"Type=notify", "ExecStart=/usr/local/bin/haplane agent --config /etc/haplane/haplane.yaml --node cp1", "StateDirectory=haplane"} {
			if !strings.Contains(string(data), want) {
				t.Errorf("unit lacks %q", want)
			}
		}
	}
	c := exampleCluster(t, config.ExampleOptions{})
	if _, err := AgentUnit(c, "nope", AgentOptions{}); err == nil {
		t.Error("unknown node accepted")
	}
	if _, err := AgentPod(c, "nope", AgentOptions{}); err == nil {
		t.Error("unknown node accepted")
	}
	data, _ := AgentUnit(c, "cp1", AgentOptions{StateDir: "/srv/haplane"})
	if strings.Contains(string(data), "StateDirectory") {
		t.Error("StateDirectory set for a folder outside /var/lib")
	}
}
