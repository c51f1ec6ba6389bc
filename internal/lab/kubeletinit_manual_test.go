//go:build kubeletlab

package lab

// A manual step of the kubelet lab (issue 15), not in the default run: one
// node host with containerd and a supervised kubelet, then `kubeadm init`
// with haplane's rendered InitConfiguration for cp1, to see how far it gets.
// On 2 shared cores: images written in ~7s, imported in ~6s, kubeadm init
// done in 8s with etcd, kube-apiserver, controller-manager and scheduler
// Running as static pods; the node is NotReady (no CNI yet).
//
//	go test -tags kubeletlab ./internal/lab/ -run TestKubeadmInitOneHost -v -count=1 -timeout 15m

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/kubeimages"
	"github.com/haplane/haplane/internal/netns"
)

func TestKubeadmInitOneHost(t *testing.T) {
	if err := netns.RequireRoot(); err != nil {
		t.Skip(err)
	}
	bin, err := NodeCacheDir()
	if err != nil {
		t.Skip(err)
	}
	const version = "v1.37.1"
	k8s, err := K8sCacheDir(version)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	root := t.TempDir()
	list, err := exec.Command(filepath.Join(k8s, "kubeadm"), "config", "images", "list", "--kubernetes-version", version).Output()
	if err != nil {
		t.Fatal(err)
	}
	labpod, err := kubeimages.BuildLabpod(ctx, "../..", root)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := kubeimages.ForList(strings.Split(string(list), "\n"), kubeimages.Binaries{K8sDir: k8s, Etcd: filepath.Join(bin, "etcd"), Labpod: labpod})
	if err != nil {
		t.Fatal(err)
	}
	var pauseRef string
	for _, img := range imgs {
		if strings.Contains(img.Ref, "/pause:") {
			pauseRef = img.Ref
		}
	}
	tarball := filepath.Join(root, "images.tar")
	t0 := time.Now()
	if err := kubeimages.WriteTarball(tarball, imgs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("images written in %s", time.Since(t0).Round(time.Millisecond))

	h := newTestNodeHost(t, "ki", "cp1", "10.77.61.21", root, bin)
	h.K8sBin = k8s
	cg := h.CgroupRoot
	defer h.Stop()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.StartContainerd(ctx, pauseRef); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if err := h.ImportImages(ctx, tarball); err != nil {
		t.Fatal(err)
	}
	t.Logf("images imported in %s", time.Since(t0).Round(time.Millisecond))
	run := func(name string, args ...string) string {
		out, err := h.Command(ctx, name, args...).CombinedOutput()
		if err != nil {
			t.Logf("%s %s: %v", name, strings.Join(args, " "), err)
		}
		return string(out)
	}
	t.Log(run("sh", "-c", "sysctl -w net.ipv4.ip_forward=1; ip link set lo up"))

	// haplane's rendered InitConfiguration for cp1 (internal/render
	// testdata, stacked), at this host's address; the control-plane
	// endpoint is the host itself since no agent (VIP + LB) runs here yet.
	golden, err := os.ReadFile("../render/testdata/kubeadm/stacked/cp1/kubeadm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer("10.77.0.11", "10.77.61.21", "10.77.0.100:8443", "10.77.61.21:6443").Replace(string(golden))
	cfg += fmt.Sprintf(`---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
failSwapOn: false
`, cg)
	cfgPath := filepath.Join(h.Root, "kubeadm.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// What a systemd unit with Restart=always and kubeadm's drop-in does.
	kubelet := h.Command(context.Background(), "sh", "-c", `while true; do
  if [ -f /var/lib/kubelet/config.yaml ]; then
    KUBELET_KUBEADM_ARGS=; [ -f /var/lib/kubelet/kubeadm-flags.env ] && . /var/lib/kubelet/kubeadm-flags.env
    `+filepath.Join(k8s, "kubelet")+` --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml $KUBELET_KUBEADM_ARGS
  fi
  sleep 1
done`)
	klog, _ := os.Create(filepath.Join(h.Root, "kubelet.log"))
	kubelet.Stdout, kubelet.Stderr = klog, klog
	if err := kubelet.Start(); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	out := run(filepath.Join(k8s, "kubeadm"), "init", "--config", cfgPath, "--skip-phases=addon/kube-proxy,addon/coredns",
		"--ignore-preflight-errors=Swap,SystemVerification,FileContent--proc-sys-net-bridge-bridge-nf-call-iptables", "-v=1")
	t.Logf("kubeadm init (%s):\n%s", time.Since(t0).Round(time.Second), out)
	if !strings.Contains(out, "control-plane has initialized successfully") {
		t.Errorf("kubeadm init did not finish")
	}
	for _, f := range []string{"kubelet.log", "containerd.log"} {
		b, _ := os.ReadFile(filepath.Join(h.Root, f))
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Logf("end of %s:\n%s", f, b)
		_ = os.WriteFile(filepath.Join(os.TempDir(), "kubeletlab-"+f), b, 0o644)
	}
	t.Logf("crictl ps -a:\n%s", run("crictl", "--runtime-endpoint", "unix://"+ContainerdSock, "ps", "-a"))
	t.Logf("kubectl get nodes,pods -A:\n%s", run(filepath.Join(k8s, "kubectl"), "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "nodes,pods", "-A", "-o", "wide"))
}
