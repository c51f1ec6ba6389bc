package render

import (
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/haplane/haplane/internal/config"
)

// TestWorkerAgentGolden: a worker's agent runs `--role worker`, with no
// VIP capabilities, and reads the CA and the kubelet's kubeconfig only.
func TestWorkerAgentGolden(t *testing.T) {
	c := exampleCluster(t, config.ExampleOptions{})
	o := AgentOptions{Worker: true}
	pod, err := AgentPod(c, "worker", o)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("agent", "worker", "haplane-agent.yaml"), pod)
	var p corev1.Pod
	if err := yaml.UnmarshalStrict(pod, &p); err != nil {
		t.Fatalf("manifest does not decode strictly as a v1.Pod: %v", err)
	}
	ctr := p.Spec.Containers[0]
	if got := strings.Join(ctr.Command, " "); !strings.Contains(got, "agent --role worker") || strings.Contains(got, "--node") {
		t.Errorf("command = %s", got)
	}
	if ctr.SecurityContext != nil {
		t.Errorf("a worker's agent needs no capabilities: %+v", ctr.SecurityContext)
	}
	mounts := map[string]bool{}
	for _, m := range ctr.VolumeMounts {
		mounts[m.MountPath] = m.ReadOnly
	}
	if ro, ok := mounts["/etc/kubernetes/kubelet.conf"]; !ok || !ro {
		t.Errorf("kubelet.conf not mounted read-only: %v", mounts)
	}
	if ro := mounts["/etc/kubernetes/pki"]; !ro {
		t.Errorf("the PKI is mounted writable on a worker: %v", mounts)
	}
	unit, err := AgentUnit(c, "worker", o)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("agent", "worker", "haplane-agent.service"), unit)
	if s := string(unit); strings.Contains(s, "CAP_NET_RAW") || !strings.Contains(s, "agent --role worker") {
		t.Errorf("worker unit:\n%s", s)
	}
}

const kubeletConf = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: Y2E=
    server: https://10.77.0.100:8443
  name: lab
contexts:
- context:
    cluster: lab
    user: system:node:w1
  name: default
current-context: default
users:
- name: system:node:w1
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
`

func TestNodeLocalKubeconfig(t *testing.T) {
	c := exampleCluster(t, config.ExampleOptions{})
	out, err := NodeLocalKubeconfig(c, []byte(kubeletConf))
	if err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	cl := kc.Clusters["lab"]
	if cl.Server != "https://127.0.0.1:6443" || cl.TLSServerName != c.EndpointHost() || string(cl.CertificateAuthorityData) != "ca" {
		t.Errorf("cluster = %+v", cl)
	}
	if u := kc.AuthInfos["system:node:w1"]; u == nil || u.ClientCertificate != "/var/lib/kubelet/pki/kubelet-client-current.pem" {
		t.Errorf("credentials changed: %+v", u)
	}
	for _, bad := range []string{"", "clusters: [", "apiVersion: v1\nkind: Config\n"} {
		if _, err := NodeLocalKubeconfig(c, []byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
