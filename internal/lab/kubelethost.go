package lab

// A kubelet lab host: a network namespace plus a mount namespace of its own,
// so that kubelet, containerd and kubeadm see their usual paths
// (/etc/kubernetes, /var/lib/kubelet, /var/lib/etcd, /run/containerd) as
// this host's alone, and nothing they write reaches the machine's files,
// mounts or sysctls. See ../shared/notes/kubelet-lab.md for why each mount.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haplane/haplane/internal/netns"
)

// NodeSysctls are the /proc/sys entries kubelet writes. They are global to
// the machine, so each host gets files of its own bind-mounted over them.
var NodeSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// nodeOverlays are the folders a host sees through an overlay on the
// machine's: reads fall through, writes stay in the host's folder.
var nodeOverlays = []string{"/etc", "/var/lib", "/var/log", "/opt"}

// nodeBinds are folders that must be a real file system, not an overlay
// (containerd's overlayfs snapshots cannot live on one; kubelet mounts
// volumes below its folder): bind mounts of the host's own folders.
var nodeBinds = []string{"/var/lib/kubelet", "/var/lib/etcd", "/var/lib/containerd"}

// NodeHost is a kubelet lab host.
type NodeHost struct {
	Name       string
	NetNS      string // the network namespace (ip netns name)
	Root       string // the host's folders on the machine
	Bin        string // containerd, containerd-shim-runc-v2, ctr, runc, crictl (tools/kubelet/build.sh)
	K8sBin     string // kubelet, kubeadm, kubectl (tools/k8s/build.sh); on the PATH after Bin
	CgroupRoot string // kubelet's cgroupRoot, e.g. /haplane-lab-cp1: all the host's cgroups are below it
	// HolderPID is the process the mount namespace lives in; with the
	// fields above it is all another `haplane lab` command needs to reach
	// the host (State.NodeHosts keeps them).
	HolderPID int
	// ContainerdPID is the host's containerd, 0 before StartContainerd.
	ContainerdPID int

	holder     *exec.Cmd // HolderPID when this process started it (to reap it)
	containerd *exec.Cmd
}

// cgroupMount is one cgroup hierarchy as the machine mounts it.
type cgroupMount struct {
	Dir, FSType, Opts string
}

// machineCgroups reads the cgroup hierarchies under /sys/fs/cgroup from
// mountinfo, to mount them again in a host (a fresh sysfs hides them).
func machineCgroups() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("lab: reading mounts: %w", err)
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT TARGET OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+4 || !strings.HasPrefix(fields[4], "/sys/fs/cgroup/") {
			continue
		}
		fstype := fields[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		var opts []string
		for _, o := range strings.Split(fields[sep+3], ",") {
			if o != "rw" && o != "ro" {
				opts = append(opts, o)
			}
		}
		if fstype == "cgroup" && len(opts) == 0 {
			continue
		}
		out = append(out, cgroupMount{Dir: fields[4], FSType: fstype, Opts: strings.Join(opts, ",")})
	}
	return out, sc.Err()
}

// setupScript is what the holder runs in its new mount namespace before it
// sleeps. It starts as a slave of the machine's mounts (unshare
// --propagation slave), so nothing mounted here reaches the machine, and
// makes itself shared for kubelet's mount propagation.
func (h *NodeHost) setupScript(cgroups []cgroupMount) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	q := strconv.Quote
	w("mount --make-rshared /")
	for _, d := range nodeOverlays {
		up, work := filepath.Join(h.Root, "upper", d), filepath.Join(h.Root, "work", d)
		w("mkdir -p %s %s", q(up), q(work))
		w("mount -t overlay overlay -o %s %s", q("lowerdir="+d+",upperdir="+up+",workdir="+work), q(d))
	}
	w("mount -t tmpfs -o mode=755 tmpfs /run")
	for _, d := range nodeBinds {
		src := filepath.Join(h.Root, "data", d)
		w("mkdir -p %s %s", q(src), q(d))
		w("mount --bind %s %s", q(src), q(d))
	}
	w("mkdir -p /etc/kubernetes/manifests /var/log/pods /run/containerd /etc/cni/net.d /opt/cni/bin")
	// sysfs shows the network namespace of whoever mounts it.
	w("mount -t sysfs sysfs /sys")
	w("mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup")
	for _, c := range cgroups {
		w("mkdir -p %s", q(c.Dir))
		if c.FSType == "cgroup2" {
			w("mount -t cgroup2 cgroup2 %s", q(c.Dir))
		} else {
			w("mount -t cgroup -o %s cgroup %s", q(c.Opts), q(c.Dir))
		}
	}
	for _, s := range NodeSysctls {
		w("mount --bind %s %s", q(filepath.Join(h.Root, "sysctl", strings.ReplaceAll(s, "/", "."))), q("/proc/sys/"+s))
	}
	w("echo ready")
	w("exec sleep infinity")
	return b.String()
}

// Start makes the host's mount namespace inside its network namespace and
// mounts its folders. Root must not be below a folder the host overlays.
func (h *NodeHost) Start(ctx context.Context) error {
	if err := netns.RequireRoot(); err != nil {
		return err
	}
	for _, d := range append(nodeOverlays, "/run") {
		if h.Root == d || strings.HasPrefix(h.Root, d+"/") {
			return fmt.Errorf("lab: node %s: root %s is below %s, which the host mounts over", h.Name, h.Root, d)
		}
	}
	cgroups, err := machineCgroups()
	if err != nil {
		return err
	}
	// Each host starts from the machine's values; kubelet changes its copy.
	if err := os.MkdirAll(filepath.Join(h.Root, "sysctl"), 0o755); err != nil {
		return fmt.Errorf("lab: node %s: %w", h.Name, err)
	}
	for _, s := range NodeSysctls {
		v, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			return fmt.Errorf("lab: node %s: reading sysctl %s: %w", h.Name, s, err)
		}
		if err := os.WriteFile(filepath.Join(h.Root, "sysctl", strings.ReplaceAll(s, "/", ".")), v, 0o644); err != nil {
			return fmt.Errorf("lab: node %s: %w", h.Name, err)
		}
	}
	if err := h.makeCgroupRoot(cgroups); err != nil {
		return err
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+h.NetNS, "--", "unshare", "--mount", "--propagation", "slave", "--", "sh", "-euc", h.setupScript(cgroups))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: node %s: starting its mount namespace: %w", h.Name, err)
	}
	h.holder = cmd
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			_ = cmd.Wait()
			return fmt.Errorf("lab: node %s: mounting its folders: %s", h.Name, strings.TrimSpace(stderr.String()))
		}
	case <-ctx.Done():
		h.Stop()
		return fmt.Errorf("lab: node %s: mounting its folders: %w", h.Name, ctx.Err())
	}
	// unshare execs sh, which execs sleep: the holder's PID is the
	// namespace's first process.
	h.HolderPID = cmd.Process.Pid
	if _, err := h.mntNS(); err != nil {
		h.Stop()
		return err
	}
	return nil
}

// mntNS is the host's mount namespace (the holder's /proc/PID/ns/mnt
// link), to find the host's processes.
func (h *NodeHost) mntNS() (string, error) {
	if h.HolderPID == 0 {
		return "", fmt.Errorf("lab: node %s: not started", h.Name)
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.HolderPID))
	if err != nil {
		return "", fmt.Errorf("lab: node %s: its mount namespace: %w", h.Name, err)
	}
	return ns, nil
}

// Command runs name in the host's network and mount namespaces, with the
// node binaries, then the Kubernetes ones, first on the PATH (kubeadm
// looks for kubelet there).
func (h *NodeHost) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(h.HolderPID), "-m", "-n", "--", name}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+h.Bin+":"+h.K8sBin+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	return cmd
}

// ContainerdSock is where containerd listens inside a host.
const ContainerdSock = "/run/containerd/containerd.sock"

// containerdConfig is containerd's config for a host: runc from the node
// binaries with cgroupfs (no systemd here), and the sandbox image pinned to
// kubeadm's pause tag so that kubelet never tries to pull it. Containers'
// oom_score_adj is kept no lower than containerd's own: lowering it needs
// CAP_SYS_RESOURCE, which a lab machine may lack (runc init then fails with
// "failed to update /proc/self/oom_score_adj: Permission denied").
func (h *NodeHost) containerdConfig(pauseRef string) string {
	return fmt.Sprintf(`version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = %q

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = %q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = %q
  SystemdCgroup = false
`, ContainerdSock, pauseRef, filepath.Join(h.Bin, "runc"))
}

// WriteContainerdConfig writes the host's containerd config and returns
// the command line that runs containerd with it.
func (h *NodeHost) WriteContainerdConfig(pauseRef string) (exe string, args []string, err error) {
	cfg := filepath.Join(h.Root, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(h.containerdConfig(pauseRef)), 0o644); err != nil {
		return "", nil, fmt.Errorf("lab: node %s: %w", h.Name, err)
	}
	return filepath.Join(h.Bin, "containerd"), []string{"--config", cfg}, nil
}

// StartContainerd starts the host's containerd (its output in
// Root/containerd.log) and waits until ctr reaches it.
func (h *NodeHost) StartContainerd(ctx context.Context, pauseRef string) error {
	exe, args, err := h.WriteContainerdConfig(pauseRef)
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(h.Root, "containerd.log"))
	if err != nil {
		return fmt.Errorf("lab: node %s: %w", h.Name, err)
	}
	defer logf.Close()
	cmd := h.Command(context.Background(), exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: a signal to the starter's process group does not
	// reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: node %s: starting containerd: %w", h.Name, err)
	}
	h.containerd, h.ContainerdPID = cmd, cmd.Process.Pid
	return h.WaitContainerd(ctx)
}

// WaitContainerd waits until ctr reaches the host's containerd.
func (h *NodeHost) WaitContainerd(ctx context.Context) error {
	for {
		if err := h.Command(ctx, "ctr", "--address", ContainerdSock, "version").Run(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: node %s: containerd did not answer: %w", h.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ImportImages imports a docker-archive tarball (kubeimages.WriteTarball)
// into the namespace kubelet uses.
func (h *NodeHost) ImportImages(ctx context.Context, tarball string) error {
	out, err := h.Command(ctx, "ctr", "--address", ContainerdSock, "-n", "k8s.io", "images", "import", "--no-unpack=false", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab: node %s: ctr images import %s: %w: %s", h.Name, tarball, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Processes lists the PIDs in the host's mount namespace, the holder last.
func (h *NodeHost) Processes() []int {
	mnt, err := h.mntNS()
	if err != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == h.HolderPID {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns == mnt {
			pids = append(pids, pid)
		}
	}
	if netns.Alive(h.HolderPID) {
		pids = append(pids, h.HolderPID)
	}
	return pids
}

// StopContainers asks the host's containerd to kill every container, so
// that none outlives it (a shim holds its container when containerd goes).
func (h *NodeHost) StopContainers() {
	if !netns.Alive(h.ContainerdPID) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := h.Command(ctx, "ctr", "--address", ContainerdSock, "-n", "k8s.io", "tasks", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = h.Command(ctx, "ctr", "--address", ContainerdSock, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id).Run()
	}
}

// Stop ends every process of the host (containerd first, asking it to stop
// its containers; then what is left, by PID), which takes its mount
// namespace and all its mounts with it, and removes the host's cgroups.
// Stop a host's kubelet before: it would start the containers again.
func (h *NodeHost) Stop() error {
	var errs []error
	if netns.Alive(h.ContainerdPID) {
		h.StopContainers()
		netns.StopPIDs([]int{h.ContainerdPID}, 10*time.Second)
	}
	if h.containerd != nil {
		_ = h.containerd.Wait()
	}
	if h.HolderPID != 0 {
		netns.StopPIDs(h.Processes(), 5*time.Second)
	}
	if h.holder != nil {
		_ = h.holder.Wait()
	}
	if err := h.removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// makeCgroupRoot creates CgroupRoot in every hierarchy, as a systemd slice
// would: kubelet refuses a cgroupRoot with a missing path. A new cpuset
// cgroup takes no task until its cpus and mems are set: the parent's.
func (h *NodeHost) makeCgroupRoot(cgroups []cgroupMount) error {
	if h.CgroupRoot == "" || h.CgroupRoot == "/" {
		return nil
	}
	for _, c := range cgroups {
		dir := filepath.Join(c.Dir, h.CgroupRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("lab: node %s: cgroup root: %w", h.Name, err)
		}
		if filepath.Base(c.Dir) != "cpuset" {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, f), v, 0o644)
			}
			if err != nil {
				return fmt.Errorf("lab: node %s: cgroup root %s: %w", h.Name, f, err)
			}
		}
	}
	return nil
}

// removeCgroups removes CgroupRoot and what is below it in every hierarchy,
// deepest first (a cgroup folder goes only once it has no children).
func (h *NodeHost) removeCgroups() error {
	if h.CgroupRoot == "" || h.CgroupRoot == "/" {
		return nil
	}
	cgroups, err := machineCgroups()
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cgroups {
		top := filepath.Join(c.Dir, h.CgroupRoot)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("lab: node %s: removing cgroup %s: %w", h.Name, dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// NodeBinVersions names the cache folder of tools/kubelet/build.sh: keep it
// in step with the versions there (a test checks).
const NodeBinVersions = "containerd-v2.4.2-runc-v1.5.3-crictl-v1.37.0-etcd-v3.7.0-cni-v1.10.0"

// NodeBinaries are the binaries a kubelet lab host runs beside kubelet
// (the CNI plugins under cni/, which a host gets as its /opt/cni/bin).
var NodeBinaries = []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "crictl", "etcd", "cni/bridge", "cni/host-local", "cni/loopback"}

// NodeCacheDir is where tools/kubelet/build.sh leaves NodeBinaries, and
// whether all of them are there.
func NodeCacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("lab: no cache directory for the node binaries: %w", err)
	}
	dir := filepath.Join(base, "haplane", "node", NodeBinVersions)
	var missing []string
	for _, b := range NodeBinaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return dir, fmt.Errorf("lab: %s has no %s: run tools/kubelet/build.sh", dir, strings.Join(missing, ", "))
	}
	return dir, nil
}
