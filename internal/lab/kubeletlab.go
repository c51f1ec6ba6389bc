package lab

// The kubelet runtime (`lab up --runtime kubelet`): every control-plane host
// and a worker are real Kubernetes nodes (NodeHost: containerd and kubelet
// in a network and a mount namespace), brought up with the steps of
// docs/deploy.md: the haplane agent (VIP + load balancer) on each
// control-plane host, `kubeadm init` with haplane's InitConfiguration on
// cp1, `haplane token create` and `haplane join` then `kubeadm join
// --control-plane` on the others, a worker through the VIP, and a
// Deployment on it.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/kubeimages"
	"github.com/haplane/haplane/internal/netns"
)

// Runtimes of a lab: how a control-plane host runs Kubernetes.
const (
	// RuntimeProcess: the lab starts kube-apiserver, controller-manager
	// and scheduler (or the stub) as plain processes.
	RuntimeProcess = "process"
	// RuntimeKubelet: kubelet runs them as kubeadm's static pods.
	RuntimeKubelet = "kubelet"
)

// WorkerName is the kubelet lab's worker host, at WorkerAddr.
const WorkerName = "w1"

// WorkerAddr is the worker's address on the lab network.
var WorkerAddr = netip.MustParseAddr("10.77.0.31")

// WorkloadName is the Deployment the kubelet lab runs on its worker.
const WorkloadName = "labpod"

// In a host: where the guide puts each file.
const (
	hostClusterFile = "/etc/haplane/haplane.yaml"
	hostKubeadmFile = "/etc/kubernetes/kubeadm.yaml"
	hostAdminConf   = "/etc/kubernetes/admin.conf"
	hostStateDir    = "/var/lib/haplane"
)

// kubeletIgnoredPreflight are the kubeadm preflight checks that cannot
// hold in a lab host, by name (never "all"): swap is the machine's, the
// kernel config and bridge-nf-call-iptables are the machine's (no
// kube-proxy runs), and cgroup v1 is allowed by failCgroupV1: false.
var kubeletIgnoredPreflight = "Swap,SystemVerification,FileContent--proc-sys-net-bridge-bridge-nf-call-iptables"

// kubeadmSkippedPhases are the addons with no image built here: the lab
// network routes pods on one bridge per host, and nothing in it needs
// cluster DNS.
const kubeadmSkippedPhases = "addon/kube-proxy,addon/coredns"

// kubeletLabConfig is appended to cp1's InitConfiguration: kubeadm uploads
// it for every node. This machine has cgroup v1 and no systemd.
const kubeletLabConfig = `---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
`

// kubeletLoop is what a systemd unit for kubelet with Restart=always and
// kubeadm's drop-in do: run kubelet once kubeadm wrote its config, with
// the flags kubeadm wrote and the host's own (/etc/default/kubelet), and
// run it again when it exits.
func kubeletLoop(kubelet string) string {
	return `while true; do
  if [ -f /var/lib/kubelet/config.yaml ]; then
    KUBELET_KUBEADM_ARGS=; KUBELET_EXTRA_ARGS=
    [ -f /var/lib/kubelet/kubeadm-flags.env ] && . /var/lib/kubelet/kubeadm-flags.env
    [ -f /etc/default/kubelet ] && . /etc/default/kubelet
    ` + kubelet + ` --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
  fi
  sleep 1
done`
}

// cniConfig is a host's pod network: a bridge with its own /24 of
// 10.244.0.0/16 (pods reach their node; the lab needs no routes between
// nodes' pods).
func cniConfig(i int) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "lab",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.%d.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
  ]
}
`, i)
}

// nodeHost is the NodeHost of a host of the lab, or nil.
func (s *State) nodeHost(name string) *NodeHost {
	for i := range s.NodeHosts {
		if s.NodeHosts[i].Name == name {
			return &s.NodeHosts[i]
		}
	}
	return nil
}

// kubeletUp brings the control-plane hosts and the worker up as
// Kubernetes nodes, step by step as docs/deploy.md says, after Up made the
// network, the cluster file and the PKI (the operator's workstation: the
// lab folder).
func kubeletUp(ctx context.Context, st *State, c *config.Cluster, o Options) error {
	t0 := time.Now()
	step := func(format string, a ...any) {
		fmt.Fprintf(o.Out, "lab: [%5.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, a...))
	}
	bin, err := NodeCacheDir()
	if err != nil {
		return err
	}
	tarball, pauseRef, err := labImages(ctx, st, o)
	if err != nil {
		return err
	}
	step("images for %s written (%s)", c.KubernetesVersion, tarball)

	// External etcd hosts run the haplane agent (its member), as in the
	// process lab: they are no Kubernetes nodes.
	for _, h := range st.Hosts {
		if h.Role != "etcd" {
			continue
		}
		specs, err := StackOf(st).Procs(st, c, h)
		if err != nil {
			return err
		}
		for _, spec := range specs {
			if _, err := st.start(h, spec); err != nil {
				return err
			}
		}
		step("%s: etcd member (haplane agent) started", h.Name)
	}

	kubeHosts := []HostState{}
	for _, h := range st.Hosts {
		if h.Role == "control-plane" || h.Role == "worker" {
			kubeHosts = append(kubeHosts, h)
		}
	}
	for i, h := range kubeHosts {
		nh := NodeHost{Name: h.Name, NetNS: h.NS, Root: filepath.Join(st.Dir, "nodes", h.Name), Bin: bin, K8sBin: st.K8sBin,
			CgroupRoot: "/" + st.Prefix + "-" + h.Name}
		st.NodeHosts = append(st.NodeHosts, nh)
		p := &st.NodeHosts[len(st.NodeHosts)-1]
		if err := p.Start(ctx); err != nil {
			return err
		}
		if err := st.save(); err != nil {
			return err
		}
		if err := st.startContainerd(ctx, h, pauseRef); err != nil {
			return err
		}
		if err := p.ImportImages(ctx, tarball); err != nil {
			return err
		}
		if err := st.prepareNode(ctx, p, i, h.Address); err != nil {
			return err
		}
		if _, err := st.start(h, ProcSpec{Name: "kubelet", Exec: "sh", Args: []string{"-c", kubeletLoop(filepath.Join(st.K8sBin, "kubelet"))}}); err != nil {
			return err
		}
		step("%s: mount namespace, containerd (images imported), kubelet waiting for kubeadm", h.Name)
	}

	// cp1: its PKI tree from the workstation, haplane's InitConfiguration,
	// the agent, kubeadm init.
	first := c.Nodes[0].Name
	nh := st.nodeHost(first)
	if _, err := st.hostRun(ctx, nh, "install-pki", "sh", "-euc", `cp -a "$1"/. /etc/kubernetes/`, "sh", st.HostDir(first)); err != nil {
		return err
	}
	if _, err := st.hostRun(ctx, nh, "render-kubeadm", "sh", "-euc", `"$1" render kubeadm --config `+hostClusterFile+` --out /var/lib/haplane/render && cp /var/lib/haplane/render/"$2"/kubeadm.yaml `+hostKubeadmFile+` && printf '%s' "$3" >> `+hostKubeadmFile,
		"sh", st.Binary, first, kubeletLabConfig); err != nil {
		return err
	}
	if err := st.startAgent(c, first); err != nil {
		return err
	}
	step("%s: PKI installed, kubeadm.yaml rendered, agent started", first)
	if _, err := st.hostRun(ctx, nh, "kubeadm-init", filepath.Join(st.K8sBin, "kubeadm"), "init", "--config", hostKubeadmFile,
		"--skip-phases="+kubeadmSkippedPhases, "--ignore-preflight-errors="+kubeletIgnoredPreflight, "-v=1"); err != nil {
		return err
	}
	step("%s: kubeadm init done", first)

	// The other control-plane hosts: a haplane token, haplane join (keys
	// sealed to the joiner), the agent, kubeadm join --control-plane.
	for _, n := range c.Nodes[1:] {
		out, err := st.hostRun(ctx, nh, "token-create-"+n.Name, st.Binary, "-o", "json", "token", "create", "--config", hostClusterFile, "--ttl", "10m")
		if err != nil {
			return err
		}
		var tok struct {
			Token, Server, CAHash string
		}
		if err := json.Unmarshal(out, &tok); err != nil {
			return fmt.Errorf("lab: haplane token create: %w: %s", err, out)
		}
		jh := st.nodeHost(n.Name)
		if _, err := st.hostRun(ctx, jh, "haplane-join", st.Binary, "join", "--server", tok.Server, "--token", tok.Token, "--ca-hash", tok.CAHash,
			"--node", n.Name, "--out", "/etc/kubernetes", "--config-out", hostClusterFile); err != nil {
			return err
		}
		if err := st.startAgent(c, n.Name); err != nil {
			return err
		}
		step("%s: haplane join done, agent started", n.Name)
		if _, err := st.hostRun(ctx, jh, "kubeadm-join", filepath.Join(st.K8sBin, "kubeadm"), "join", "--config", hostKubeadmFile,
			"--ignore-preflight-errors="+kubeletIgnoredPreflight, "-v=1"); err != nil {
			return err
		}
		step("%s: kubeadm join --control-plane done", n.Name)
	}

	// The worker joins through the VIP with a kubeadm bootstrap token.
	out, err := st.hostRun(ctx, nh, "kubeadm-token-create", filepath.Join(st.K8sBin, "kubeadm"), "token", "create", "--print-join-command", "--kubeconfig", hostAdminConf)
	if err != nil {
		return err
	}
	joinArgs := strings.Fields(strings.TrimSpace(string(out)))
	if len(joinArgs) < 3 || joinArgs[0] != "kubeadm" || joinArgs[1] != "join" {
		return fmt.Errorf("lab: kubeadm token create printed %q, not a join command", out)
	}
	wh := st.nodeHost(WorkerName)
	if _, err := st.hostRun(ctx, wh, "kubeadm-join", filepath.Join(st.K8sBin, "kubeadm"), append(joinArgs[1:], "--node-name", WorkerName,
		"--ignore-preflight-errors="+kubeletIgnoredPreflight, "-v=1")...); err != nil {
		return err
	}
	// Its node-local load balancer to every apiserver, following the
	// kubernetes Service's endpoints (the worker unit of `render agent`).
	w, _ := st.Host(WorkerName)
	if _, err := st.start(w, ProcSpec{Name: "agent", Args: []string{"--log-format", "json", "agent", "--role", "worker", "--config", hostClusterFile,
		"--kubeconfig", "/etc/kubernetes/kubelet.conf", "--state-dir", hostStateDir, "--api-addr", "127.0.0.1:9444"}}); err != nil {
		return err
	}
	// kubelet then reaches the apiservers through it (docs/deploy.md, 5).
	if _, err := st.hostRun(ctx, wh, "node-local-kubeconfig", st.Binary, "render", "node-local-kubeconfig", "--config", hostClusterFile,
		"--in", "/etc/kubernetes/kubelet.conf", "--out", "/etc/kubernetes/kubelet.conf"); err != nil {
		return err
	}
	if p, ok := st.Proc(WorkerName, "kubelet"); ok {
		stopAll([]Proc{p}, 10*time.Second) // systemctl restart kubelet
	}
	if _, err := st.Restart(WorkerName, "kubelet"); err != nil {
		return err
	}
	step("%s: kubeadm join (worker, through the VIP) done, node-local load balancer started, kubelet.conf pointed at it", WorkerName)

	kubectl := func(name string, args ...string) ([]byte, error) {
		return st.hostRun(ctx, nh, name, filepath.Join(st.K8sBin, "kubectl"), append([]string{"--kubeconfig", hostAdminConf}, args...)...)
	}
	if _, err := kubectl("wait-nodes", "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=4m"); err != nil {
		return err
	}
	step("%d nodes Ready", len(kubeHosts))
	if _, err := kubectl("workload", "create", "deployment", WorkloadName, "--image="+kubeimages.WorkloadRef, "--replicas=2", "--port=8080"); err != nil {
		return err
	}
	if _, err := kubectl("workload-rollout", "rollout", "status", "deployment/"+WorkloadName, "--timeout=4m"); err != nil {
		return err
	}
	step("deployment %s: 2 pods Running on %s", WorkloadName, WorkerName)
	if err := st.startWatcher(kubectl, "https://"+c.LoadBalancer.NodeLocal.Listen, c.EndpointHost()); err != nil {
		return err
	}
	step("pod %s on %s: watching ConfigMaps through the node-local load balancer", WatcherName, WorkerName)
	return nil
}

// labImages writes the images kubeadm lists for the cluster's version,
// built from the binaries here, and the lab's workload, into one tarball.
func labImages(ctx context.Context, st *State, o Options) (tarball, pauseRef string, err error) {
	c, err := config.Load(st.ClusterFile)
	if err != nil {
		return "", "", err
	}
	dir := filepath.Join(st.Dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	labpod, err := kubeimages.BuildLabpod(ctx, o.ModuleDir, dir)
	if err != nil {
		return "", "", fmt.Errorf("lab: the kubelet runtime builds its pause and workload images from haplane's source (--module-dir): %w", err)
	}
	return releaseImages(ctx, st.K8sBin, c.KubernetesVersion, labpod, filepath.Join(dir, "images.tar"))
}

// releaseImages writes into tarball the images the kubeadm in k8sBin lists
// for version, built from k8sBin's binaries, the node cache's etcd and
// labpod (pause and the workload).
func releaseImages(ctx context.Context, k8sBin, version, labpod, tarball string) (string, string, error) {
	bin, err := NodeCacheDir()
	if err != nil {
		return "", "", err
	}
	list, err := exec.CommandContext(ctx, filepath.Join(k8sBin, "kubeadm"), "config", "images", "list", "--kubernetes-version", version).Output()
	if err != nil {
		return "", "", fmt.Errorf("lab: kubeadm config images list: %w", err)
	}
	imgs, err := kubeimages.ForList(strings.Split(string(list), "\n"), kubeimages.Binaries{K8sDir: k8sBin, Etcd: filepath.Join(bin, "etcd"), Labpod: labpod})
	if err != nil {
		return "", "", err
	}
	pauseRef := ""
	for _, img := range imgs {
		if strings.Contains(img.Ref, "/pause:") {
			pauseRef = img.Ref
		}
	}
	if err := kubeimages.WriteTarball(tarball, imgs...); err != nil {
		return "", "", err
	}
	return tarball, pauseRef, nil
}

// prepareNode does what a machine's setup does before kubeadm: IP
// forwarding, the CNI plugins and config, the cluster file, and kubelet's
// host flags (its own cgroup root; its address, as the machine's host name
// resolves to no lab address).
func (st *State) prepareNode(ctx context.Context, nh *NodeHost, i int, addr string) error {
	script := `sysctl -qw net.ipv4.ip_forward=1
ip link set lo up
mkdir -p /etc/haplane /opt/cni/bin /etc/cni/net.d /etc/default ` + hostStateDir + `
cp "$1"/cni/* /opt/cni/bin/
printf '%s' "$2" > /etc/cni/net.d/10-lab.conflist
printf 'KUBELET_EXTRA_ARGS="--cgroup-root=%s --node-ip=%s"\n' "$3" "$5" > /etc/default/kubelet
cp "$4" ` + hostClusterFile + `
`
	_, err := st.hostRun(ctx, nh, "prepare", "sh", "-euc", script, "sh", nh.Bin, cniConfig(i+1), nh.CgroupRoot, st.ClusterFile, addr)
	return err
}

// startAgent starts the haplane agent on a control-plane host as its
// rendered systemd unit does (etcd.runBy: kubelet, so it runs no member).
func (st *State) startAgent(c *config.Cluster, node string) error {
	h, _ := st.Host(node)
	_, err := st.start(h, ProcSpec{Name: "agent", Args: []string{"--log-format", "json", "agent", "--config", hostClusterFile, "--node", node,
		"--state-dir", hostStateDir, "--api-addr", "127.0.0.1:9444"}})
	return err
}

// hostRun runs one step of the guide in a node host, its output in
// logs/HOST-NAME.log, and returns that output; a failure names the log.
func (st *State) hostRun(ctx context.Context, nh *NodeHost, name, exe string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	cmd := nh.Command(ctx, exe, args...)
	var out strings.Builder
	logPath := filepath.Join(st.Dir, "logs", nh.Name+"-"+name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	var stdout strings.Builder
	cmd.Stdout = io.MultiWriter(&stdout, logf, &out)
	cmd.Stderr = io.MultiWriter(logf, &out)
	if err := cmd.Run(); err != nil {
		tail := out.String()
		if len(tail) > 3000 {
			tail = "..." + tail[len(tail)-3000:]
		}
		return nil, fmt.Errorf("lab: %s: %s: %w (log %s):\n%s", nh.Name, name, err, logPath, tail)
	}
	return []byte(stdout.String()), nil
}

// kubeletDown stops the node hosts of a kubelet lab: every kubelet first
// (it would start containers again), then each host's containers,
// containerd, what is left in its mount namespace, and its cgroups.
func kubeletDown(st *State) []error {
	var kubelets []Proc
	for _, p := range st.Procs {
		if p.Name == "kubelet" {
			kubelets = append(kubelets, p)
		}
	}
	stopAll(kubelets, 5*time.Second)
	var errs []error
	for i := range st.NodeHosts {
		if err := st.NodeHosts[i].Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// nodeCommand is start's command for a process of a node host: entered
// with nsenter into its network and mount namespaces, in its own session.
func nodeCommand(nh *NodeHost, exe string, args []string) *exec.Cmd {
	cmd := nh.Command(context.Background(), exe, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd
}

// podProcess finds the process of a static pod's container in a node host
// by its program's name (kube-apiserver, etcd, ...): kubelet started it,
// so the lab has no record of it. A container has a mount namespace of its
// own; static pods share the host's network namespace, so that is where
// to look.
func podProcess(nh *NodeHost, name string) (Proc, bool) {
	netNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", nh.HolderPID))
	if err != nil {
		return Proc{}, false
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil || ns != netNS {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		argv0, _, _ := strings.Cut(string(b), "\x00")
		if filepath.Base(argv0) == name && netns.Alive(pid) {
			return Proc{Host: nh.Name, Name: name, PID: pid, Pod: true}, true
		}
	}
	return Proc{}, false
}

// waitPodProcess waits until kubelet has started a static pod's process
// again (its restart policy; the lab starts nothing itself).
func waitPodProcess(nh *NodeHost, name string, d time.Duration) (Proc, error) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if p, ok := podProcess(nh, name); ok {
			return p, nil
		}
	}
	return Proc{}, fmt.Errorf("lab: %s: kubelet did not start %s again within %s", nh.Name, name, d)
}

// startContainerd starts a node host's containerd as a process of the lab
// (so `lab` commands can stop and restart it) and waits for it.
func (st *State) startContainerd(ctx context.Context, h HostState, pauseRef string) error {
	nh := st.nodeHost(h.Name)
	exe, args, err := nh.WriteContainerdConfig(pauseRef)
	if err != nil {
		return err
	}
	p, err := st.start(h, ProcSpec{Name: "containerd", Exec: exe, Args: args})
	if err != nil {
		return err
	}
	nh.ContainerdPID = p.PID
	if err := st.save(); err != nil {
		return err
	}
	return nh.WaitContainerd(ctx)
}

// nodeReboot is the node-reboot scenario: a control-plane host (the VIP
// holder) goes down as a reboot takes it, its services stopped (the
// agent's SIGTERM hands the VIP over; kubelet; every container;
// containerd), and comes back: containerd, kubelet (which starts the
// static pods again), the agent. The worker must stay Ready all along, and its watcher
// pod see every write within a second (podWatchMax).
func nodeReboot() scenario {
	return scenario{name: "node-reboot", needsKubelet: true,
		desc: "reboot the VIP holder: stop its agent (SIGTERM), kubelet, containers and containerd, start them again; the VIP moves, the worker stays Ready through it",
		// The agent drains its load balancer for up to 30s on SIGTERM (watches
		// never end by themselves): the window covers the whole stop.
		window: 40 * time.Second, post: 20 * time.Second, maxGap: 3 * time.Second, podWatchMax: time.Second,
		apply: func(r *chaosRun) (string, func() error, error) {
			h, err := r.holder()
			if err != nil {
				return "", nil, err
			}
			nh := r.st.nodeHost(h)
			if nh == nil {
				return h, nil, fmt.Errorf("%s is no kubelet host", h)
			}
			r.event("reboot " + h + ": SIGTERM agent, stop kubelet, containers, containerd")
			// As systemd stops a unit: SIGTERM, SIGKILL after its
			// TimeoutStopSec (the agent's unit: 45s).
			stop := func(name string) error { return r.stopProcWithin(h, name, 45*time.Second) }
			for _, name := range []string{"agent", "kubelet"} {
				if err := stop(name); err != nil {
					return h, nil, err
				}
			}
			r.event("agent and kubelet stopped on " + h)
			nh.StopContainers()
			if err := stop("containerd"); err != nil {
				return h, nil, err
			}
			r.event("containers and containerd stopped on " + h)
			return h, func() error {
				r.event("boot " + h + ": containerd, kubelet, agent")
				p, err := r.st.Restart(h, "containerd")
				if err != nil {
					return err
				}
				nh.ContainerdPID = p.PID
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := nh.WaitContainerd(ctx); err != nil {
					return err
				}
				for _, name := range []string{"kubelet", "agent"} {
					if _, err := r.st.Restart(h, name); err != nil {
						return err
					}
				}
				return r.st.save()
			}, nil
		}}
}
