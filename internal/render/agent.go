package render

import (
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/haplane/haplane/internal/config"
)

// AgentOptions are the host-side choices the cluster file does not hold.
type AgentOptions struct {
	// Image of the agent's static pod (default DefaultAgentImage).
	Image string
	// Binary is the agent's path for the systemd unit (default
	// /usr/local/bin/haplane).
	Binary string
	// ConfigPath is where the cluster file lives on the host (default
	// /etc/haplane/haplane.yaml).
	ConfigPath string
	// StateDir holds tokens and other agent state (default /var/lib/haplane).
	StateDir string
	// APIPort is the agent's local API port on 127.0.0.1 (default 9444).
	APIPort int
	// Worker renders `agent --role worker`, a worker's node-local load
	// balancer (loadBalancer.nodeLocal), instead of a control-plane node's
	// agent; node is then unused.
	Worker bool
}

// Defaults for AgentOptions.
const (
	DefaultAgentImage  = "haplane/haplane:latest"
	DefaultAgentBinary = "/usr/local/bin/haplane"
	DefaultConfigPath  = "/etc/haplane/haplane.yaml"
	DefaultStateDir    = "/var/lib/haplane"
	DefaultAgentPort   = 9444
)

func (o AgentOptions) withDefaults() AgentOptions {
	if o.Image == "" {
		o.Image = DefaultAgentImage
	}
	if o.Binary == "" {
		o.Binary = DefaultAgentBinary
	}
	if o.ConfigPath == "" {
		o.ConfigPath = DefaultConfigPath
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.APIPort == 0 {
		o.APIPort = DefaultAgentPort
	}
	return o
}

func agentArgs(c *config.Cluster, node string, o AgentOptions) []string {
	if o.Worker {
		return []string{"agent", "--role", "worker", "--config", o.ConfigPath, "--state-dir", o.StateDir,
			"--api-addr", fmt.Sprintf("127.0.0.1:%d", o.APIPort)}
	}
	return []string{"agent", "--config", o.ConfigPath, "--node", node, "--state-dir", o.StateDir,
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", o.APIPort)}
}

// AgentPod renders the agent's static pod manifest for node, for kubelet's
// manifest folder. It runs on the host network with NET_ADMIN and NET_RAW
// (VRRP's raw socket, the VIP's address and gratuitous ARP) and mounts the
// cluster file, the PKI and, for a stacked member, the etcd data folder.
func AgentPod(c *config.Cluster, node string, o AgentOptions) ([]byte, error) {
	if _, ok := c.NodeByName(node); !ok && !o.Worker {
		return nil, fmt.Errorf("render: node %q is not in the cluster file", node)
	}
	o = o.withDefaults()
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	file := corev1.HostPathFile
	type mount struct {
		name, host string
		kind       *corev1.HostPathType
		readOnly   bool
	}
	mounts := []mount{
		{"cluster-file", o.ConfigPath, &file, true},
		{"pki", c.Certificates.Dir, &dirOrCreate, false},
		{"state", o.StateDir, &dirOrCreate, false},
	}
	caps := []corev1.Capability{"NET_ADMIN", "NET_RAW"}
	labels := map[string]string{"component": "haplane-agent", "tier": "control-plane"}
	switch {
	case o.Worker:
		// A load balancer on loopback: no VIP, no raw socket. It reads the
		// CA from the PKI folder and watches the apiservers with the
		// kubelet's identity.
		caps = nil
		labels = map[string]string{"component": "haplane-agent", "tier": "node"}
		mounts[1].readOnly = true
		mounts = append(mounts, mount{"kubeconfig", c.LoadBalancer.NodeLocal.Kubeconfig, &file, true})
	case c.Etcd.Topology == config.TopologyStacked && c.Etcd.AgentRunsMembers():
		mounts = append(mounts, mount{"etcd-data", c.Etcd.DataDir, &dirOrCreate, false})
	}
	var vols []corev1.Volume
	var vms []corev1.VolumeMount
	for _, m := range mounts {
		vols = append(vols, hostPathVolume(m.name, m.host, m.kind))
		vms = append(vms, corev1.VolumeMount{Name: m.name, MountPath: m.host, ReadOnly: m.readOnly})
	}
	probe := func(p string, period int32) *corev1.Probe {
		pr := loopbackProbe(p, o.APIPort)
		pr.PeriodSeconds, pr.TimeoutSeconds, pr.FailureThreshold = period, 2, 3
		return pr
	}
	grace := int64(45)
	pod := staticPod("haplane-agent", labels, nil, corev1.PodSpec{
		TerminationGracePeriodSeconds: &grace,
		Containers: []corev1.Container{{
			Name:            "agent",
			Image:           o.Image,
			Command:         append([]string{"haplane"}, agentArgs(c, node, o)...),
			SecurityContext: securityContext(caps),
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("100m"),
				corev1.ResourceMemory: resource.MustParse("128Mi"),
			}},
			LivenessProbe:  probe("/healthz", 10),
			ReadinessProbe: probe("/readyz", 2),
			VolumeMounts:   vms,
		}},
		Volumes: vols,
	})
	return marshalPod(pod, "agent pod")
}

func securityContext(caps []corev1.Capability) *corev1.SecurityContext {
	if len(caps) == 0 {
		return nil
	}
	return &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: caps}}
}

var unitTmpl = unitTemplate("unit", `# Rendered by haplane for {{.Node}}; edit the cluster file, not this.
[Unit]
{{- if .Worker}}
Description=haplane agent: this worker's own load balancer to every kube-apiserver
{{- else}}
Description=haplane agent: VIP, API load balancer{{if .Stacked}} and etcd member{{end}} for the Kubernetes control plane
{{- end}}
Wants=network-online.target
After=network-online.target
# A crash loop ends in the failed state (systemctl --failed, alerts) after
# 20 starts in 10 minutes, about 7 minutes of the back-off below; a single
# crash never gets there.
StartLimitIntervalSec=10min
StartLimitBurst=20
{{- if .Stacked}}
RequiresMountsFor={{.DataDir}}
{{- end}}

[Service]
# The agent tells systemd when every part is up.
Type=notify
ExecStart={{.Binary}} {{.Args}}
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM: a priority-0 advert, the VIP released, the load balancer drained
# and etcd stopped cleanly; KillMode=mixed leaves that to the agent.
KillMode=mixed
TimeoutStopSec=45s
# A dead agent (kill -9, OOM, a panic) comes back at once: the VIP it held
# expires by itself (vip.addressLifetime), and the restarted agent removes
# any copy left before it starts as backup. Repeated crashes back off from
# 100ms to 30s in 8 steps (systemd 254+; older versions keep 100ms).
Restart=always
RestartSec=100ms
RestartSteps=8
RestartMaxDelaySec=30s
LimitNOFILE=1048576
{{- if .Worker}}
CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER
{{- else}}
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER
{{- end}}
{{- if .StateDirName}}
StateDirectory={{.StateDirName}}
{{- end}}
{{template "unit-tail"}}`)

// AgentUnit renders a systemd unit running the agent for node.
func AgentUnit(c *config.Cluster, node string, o AgentOptions) ([]byte, error) {
	if _, ok := c.NodeByName(node); !ok && !o.Worker {
		return nil, fmt.Errorf("render: node %q is not in the cluster file", node)
	}
	o = o.withDefaults()
	return executeUnit(unitTmpl, map[string]any{
		"Node":         node,
		"Worker":       o.Worker,
		"Stacked":      c.Etcd.Topology == config.TopologyStacked && c.Etcd.AgentRunsMembers() && !o.Worker,
		"DataDir":      c.Etcd.DataDir,
		"Binary":       o.Binary,
		"Args":         strings.Join(agentArgs(c, node, o), " "),
		"StateDirName": stateDirName(o.StateDir),
	}, "agent unit")
}

// stateDirName is StateDirectory= for dir, which systemd takes relative to
// /var/lib; empty when dir lies elsewhere.
func stateDirName(dir string) string {
	if rel, ok := strings.CutPrefix(path.Clean(dir), "/var/lib/"); ok {
		return rel
	}
	return ""
}
