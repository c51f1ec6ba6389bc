package render

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestControlPlaneGolden: the flags of every control-plane component, per
// node, against testdata (the real binaries run them in test/e2e/lab).
func TestControlPlaneGolden(t *testing.T) {
	for _, tc := range kubeadmCases {
		t.Run(tc.name, func(t *testing.T) {
			c := exampleCluster(t, tc.opts)
			for _, n := range c.Nodes {
				a, err := ControlPlane(c, n.Name, ControlPlaneDirs{})
				if err != nil {
					t.Fatal(err)
				}
				for name, args := range map[string][]string{"kube-apiserver": a.APIServer, "kube-controller-manager": a.ControllerManager, "kube-scheduler": a.Scheduler} {
					golden(t, filepath.Join("controlplane", tc.name, n.Name, name+".args"), []byte(strings.Join(args, "\n")+"\n"))
				}
				etcd := "--etcd-servers=https://" + n.Address + ":2379"
				if tc.name == "external" {
					etcd = "--etcd-servers=https://10.77.0.21:2379,https://10.77.0.22:2379,https://10.77.0.23:2379"
				}
				for _, want := range []string{etcd, "--advertise-address=" + n.Address, "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt"} {
					if !slices.Contains(a.APIServer, want) {
						t.Errorf("%s: kube-apiserver lacks %s", n.Name, want)
					}
				}
				for _, args := range [][]string{a.ControllerManager, a.Scheduler} {
					if !slices.Contains(args, "--leader-elect=true") {
						t.Errorf("%s: %v does not elect a leader", n.Name, args)
					}
				}
			}
		})
	}
	if _, err := ControlPlane(exampleCluster(t, kubeadmCases[0].opts), "nope", ControlPlaneDirs{}); err == nil {
		t.Error("an unknown node renders")
	}
}
