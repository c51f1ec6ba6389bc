package render

import (
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/haplane/haplane/internal/config"
)

// EtcdOptions are the host-side choices for an etcd member that the cluster
// file does not hold.
type EtcdOptions struct {
	// Image of the etcd static pod (default DefaultEtcdImage, the etcd
	// release haplane embeds).
	Image string
	// MetricsPort is the plain-HTTP metrics and health port on 127.0.0.1
	// (default 2381, as kubeadm); the probes use it.
	MetricsPort int
	// Binary and ConfigPath are haplane's, for the systemd unit (defaults
	// as AgentOptions).
	Binary     string
	ConfigPath string
}

// Defaults for EtcdOptions.
const (
	DefaultEtcdImage       = "registry.k8s.io/etcd:3.6.16-0"
	DefaultEtcdMetricsPort = 2381
)

func (o EtcdOptions) withDefaults() EtcdOptions {
	if o.Image == "" {
		o.Image = DefaultEtcdImage
	}
	if o.MetricsPort == 0 {
		o.MetricsPort = DefaultEtcdMetricsPort
	}
	if o.Binary == "" {
		o.Binary = DefaultAgentBinary
	}
	if o.ConfigPath == "" {
		o.ConfigPath = DefaultConfigPath
	}
	return o
}

// EtcdClusterToken is the initial cluster token haplane uses for a cluster:
// the one `haplane etcd run` bootstraps with, so a rendered member and a
// haplane-run member can form one cluster.
func EtcdClusterToken(c *config.Cluster) string { return c.Name + "-etcd" }

func etcdMemberFor(c *config.Cluster, node string) (config.EtcdNode, error) {
	for _, m := range c.EtcdMembers() {
		if m.Name == node {
			return m, nil
		}
	}
	return config.EtcdNode{}, fmt.Errorf("render: %q is not an etcd member in the cluster file", node)
}

func hostPort(scheme, host string, port int) string {
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// etcdFlags are kubeadm's etcd flags for one member, sorted as kubeadm
// writes them, with the initial cluster of every member of the file.
func etcdFlags(c *config.Cluster, m config.EtcdNode, o EtcdOptions) []string {
	pki := path.Join(c.Certificates.Dir, "etcd")
	var initial []string
	for _, p := range c.EtcdMembers() {
		initial = append(initial, p.Name+"="+hostPort("https", p.Address, c.Etcd.PeerPort))
	}
	client := hostPort("https", m.Address, c.Etcd.ClientPort)
	peer := hostPort("https", m.Address, c.Etcd.PeerPort)
	listenClient := client
	if ip := net.ParseIP(m.Address); ip == nil || !ip.IsLoopback() {
		listenClient = hostPort("https", "127.0.0.1", c.Etcd.ClientPort) + "," + client
	}
	return []string{
		"--advertise-client-urls=" + client,
		"--cert-file=" + path.Join(pki, "server.crt"),
		"--client-cert-auth=true",
		"--data-dir=" + c.Etcd.DataDir,
		"--feature-gates=InitialCorruptCheck=true",
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=" + strings.Join(initial, ","),
		"--initial-cluster-state=new",
		"--initial-cluster-token=" + EtcdClusterToken(c),
		"--key-file=" + path.Join(pki, "server.key"),
		"--listen-client-urls=" + listenClient,
		"--listen-metrics-urls=" + hostPort("http", "127.0.0.1", o.MetricsPort),
		"--listen-peer-urls=" + peer,
		"--name=" + m.Name,
		"--peer-cert-file=" + path.Join(pki, "peer.crt"),
		"--peer-client-cert-auth=true",
		"--peer-key-file=" + path.Join(pki, "peer.key"),
		"--peer-trusted-ca-file=" + path.Join(pki, "ca.crt"),
		"--snapshot-count=10000",
		"--trusted-ca-file=" + path.Join(pki, "ca.crt"),
		"--watch-progress-notify-interval=5s",
	}
}

// EtcdPod renders the etcd static pod manifest for node, as kubeadm's
// /etc/kubernetes/manifests/etcd.yaml: host network, the member's
// certificates and data dir from the host, probes on the loopback metrics
// port (/livez, /readyz). It bootstraps a new cluster of every member of the
// cluster file (--initial-cluster-state=new); a member added to a running
// cluster later joins with `haplane etcd replace` and `haplane etcd run`,
// which handle the learner step.
func EtcdPod(c *config.Cluster, node string, o EtcdOptions) ([]byte, error) {
	m, err := etcdMemberFor(c, node)
	if err != nil {
		return nil, err
	}
	o = o.withDefaults()
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	pkiDir := path.Join(c.Certificates.Dir, "etcd")
	probe := func(p string, failures, delay, period int32) *corev1.Probe {
		pr := loopbackProbe(p, o.MetricsPort)
		pr.InitialDelaySeconds, pr.PeriodSeconds, pr.TimeoutSeconds, pr.FailureThreshold = delay, period, 15, failures
		return pr
	}
	priority := int32(2000001000)
	pod := staticPod("etcd", map[string]string{"component": "etcd", "tier": "control-plane"},
		map[string]string{"kubeadm.kubernetes.io/etcd.advertise-client-urls": hostPort("https", m.Address, c.Etcd.ClientPort)},
		corev1.PodSpec{
			Priority: &priority,
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "etcd",
				Image:           o.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         append([]string{"etcd"}, etcdFlags(c, m, o)...),
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("100m"),
					corev1.ResourceMemory: resource.MustParse("100Mi"),
				}},
				LivenessProbe:  probe("/livez", 8, 10, 10),
				ReadinessProbe: probe("/readyz", 3, 0, 1),
				StartupProbe:   probe("/readyz", 24, 10, 10),
				VolumeMounts: []corev1.VolumeMount{
					{Name: "etcd-data", MountPath: c.Etcd.DataDir},
					{Name: "etcd-certs", MountPath: pkiDir},
				},
			}},
			Volumes: []corev1.Volume{
				hostPathVolume("etcd-certs", pkiDir, &dirOrCreate),
				hostPathVolume("etcd-data", c.Etcd.DataDir, &dirOrCreate),
			},
		})
	return marshalPod(pod, "etcd pod for "+node)
}

var etcdUnitTmpl = unitTemplate("etcd-unit", `# Rendered by haplane for {{.Node}}; edit the cluster file, not this.
[Unit]
Description=etcd member {{.Node}} of cluster {{.Cluster}}, run by haplane
Documentation=https://etcd.io/docs/
Wants=network-online.target
After=network-online.target
RequiresMountsFor={{.DataDir}}

[Service]
# haplane etcd run bootstraps from the cluster file, or joins a running
# cluster as a learner (removing a stale entry of this node when that keeps
# quorum) and promotes itself once caught up. It serves /livez and /readyz on
# {{.Metrics}}. SIGTERM stops the member cleanly.
Type=simple
ExecStart={{.Binary}} etcd run --config {{.Config}} --node {{.Node}} --data-dir {{.DataDir}} --metrics-url {{.Metrics}}
KillSignal=SIGTERM
TimeoutStopSec=30s
Restart=always
RestartSec=5s
LimitNOFILE=65536
# etcd syncs every write; keep it away from the OOM killer.
OOMScoreAdjust=-999
{{template "unit-tail"}}`)

// EtcdUnit renders a systemd unit running node's etcd member with
// `haplane etcd run`, for hosts where systemd rather than kubelet manages
// etcd.
func EtcdUnit(c *config.Cluster, node string, o EtcdOptions) ([]byte, error) {
	if _, err := etcdMemberFor(c, node); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	return executeUnit(etcdUnitTmpl, map[string]any{
		"Node": node, "Cluster": c.Name, "DataDir": c.Etcd.DataDir, "Binary": o.Binary,
		"Config": o.ConfigPath, "Metrics": hostPort("http", "127.0.0.1", o.MetricsPort),
	}, "etcd unit for "+node)
}
