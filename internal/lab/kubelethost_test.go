package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/kubeimages"
	"github.com/haplane/haplane/internal/netns"
)

func TestNodeBinVersionsMatchBuildScript(t *testing.T) {
	b, err := os.ReadFile("../../tools/kubelet/build.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	// containerd-vX-runc-vY-crictl-vZ-etcd-vW: each NAME_version=vX in the script.
	f := strings.Split(NodeBinVersions, "-")
	for i := 0; i+1 < len(f); i += 2 {
		want := fmt.Sprintf("%s_version=%s\n", f[i], f[i+1])
		if !strings.Contains(s, want) {
			t.Errorf("tools/kubelet/build.sh has no %q (NodeBinVersions %s)", want, NodeBinVersions)
		}
	}
}

// newTestNodeHost makes a lab network (closed at the test's end) named
// PREFIX and this process's ID, with one host at addr (in 10.77.61.0/24, this
// file's), and a NodeHost for it that is not started yet.
func newTestNodeHost(t *testing.T, prefix, name, addr, root, bin string) *NodeHost {
	t.Helper()
	prefix = fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
	n, err := netns.NewNet(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	nh, err := n.AddHost(name, netip.MustParseAddr(addr), 24)
	if err != nil {
		t.Fatal(err)
	}
	return &NodeHost{Name: name, NetNS: nh.NS, Root: filepath.Join(root, name), Bin: bin, CgroupRoot: "/haplane-test-" + prefix}
}

// machineState is what a node host must leave as it found it.
func machineState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	// Network namespaces (this test's and other tests' running meanwhile)
	// come and go under /run/netns; every other mount must stay.
	for _, f := range []string{"/proc/1/mountinfo", "/proc/self/mountinfo"} {
		mi, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(string(mi), "\n") {
			if fields := strings.Fields(line); len(fields) > 4 && !strings.HasPrefix(fields[4], "/run/netns/") {
				n++
			}
		}
		fmt.Fprintf(&b, "%s: %d mounts\n", f, n)
	}
	for _, s := range NodeSysctls {
		v, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s", s, v)
	}
	return b.String()
}

// TestNodeHostContainerd starts a node host, its containerd, imports the
// pause image built here, sees it with ctr and crictl, changes a sysctl
// inside, and stops: no process, mount, cgroup or sysctl change is left.
func TestNodeHostContainerd(t *testing.T) {
	if err := netns.RequireRoot(); err != nil {
		t.Skip(err)
	}
	bin, err := NodeCacheDir()
	if err != nil {
		t.Skipf("node binaries not built (run tools/kubelet/build.sh, about 5 minutes the first time): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := t.TempDir()
	labpod, err := kubeimages.BuildLabpod(ctx, "../..", root)
	if err != nil {
		t.Fatal(err)
	}
	const pauseRef = "registry.k8s.io/pause:3.10.2"
	tarball := filepath.Join(root, "images.tar")
	if err := kubeimages.WriteTarball(tarball, kubeimages.Image{Ref: pauseRef, Files: []kubeimages.File{{Path: "/pause", Source: labpod}}, Entrypoint: []string{"/pause"}}); err != nil {
		t.Fatal(err)
	}

	before := machineState(t)
	h := newTestNodeHost(t, "nh", "n1", "10.77.61.11", root, bin)
	cg := h.CgroupRoot
	stopped := false
	defer func() {
		if !stopped {
			h.Stop()
		}
	}()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Inside: its own folders, its own sysctl copy, the lab address.
	out, err := h.Command(ctx, "sh", "-euc", "echo 1 > /proc/sys/vm/panic_on_oom; cat /proc/sys/vm/panic_on_oom; ls -d /etc/kubernetes/manifests /var/lib/kubelet /run/containerd; mkdir -p /sys/fs/cgroup/pids"+cg+"/pod; ip -4 -o addr show eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("inside the host: %v: %s", err, out)
	}
	if !strings.HasPrefix(string(out), "1\n") || !strings.Contains(string(out), "10.77.61.11/24") {
		t.Errorf("inside the host: %s", out)
	}
	if err := h.StartContainerd(ctx, pauseRef); err != nil {
		log, _ := os.ReadFile(filepath.Join(h.Root, "containerd.log"))
		t.Fatalf("%v\n%s", err, log)
	}
	if err := h.ImportImages(ctx, tarball); err != nil {
		t.Fatal(err)
	}
	out, err = h.Command(ctx, "ctr", "--address", ContainerdSock, "-n", "k8s.io", "images", "ls", "-q").CombinedOutput()
	if err != nil || !strings.Contains(string(out), pauseRef) {
		t.Errorf("ctr images ls: %v: %s", err, out)
	}
	out, err = h.Command(ctx, "crictl", "--runtime-endpoint", "unix://"+ContainerdSock, "images").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "registry.k8s.io/pause") || !strings.Contains(string(out), "3.10.2") {
		t.Errorf("crictl images: %v: %s", err, out)
	}
	pids := h.Processes()
	if len(pids) < 2 {
		t.Errorf("host processes %v: want containerd and the holder", pids)
	}

	stopped = true
	if err := h.Stop(); err != nil {
		t.Error(err)
	}
	for _, pid := range pids {
		if netns.Alive(pid) {
			t.Errorf("process %d of the host is still alive", pid)
		}
	}
	if after := machineState(t); after != before {
		t.Errorf("machine changed:\nbefore %s\nafter  %s", before, after)
	}
	if _, err := os.Stat("/sys/fs/cgroup/pids" + cg); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left: %v", cg, err)
	}
}
