package render

import (
	"bytes"
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/haplane/haplane/internal/config"
)

// kubeadm v1beta4 documents, reduced to the fields haplane sets. The field
// names and nesting follow kubeadm's API (cmd/kubeadm/app/apis/kubeadm/v1beta4)
// and every rendered file is checked with the real `kubeadm config validate`
// in the tests.

const kubeadmAPIVersion = "kubeadm.k8s.io/v1beta4"

type kubeadmTypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

type kubeadmArg struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type kubeadmAPIEndpoint struct {
	AdvertiseAddress string `json:"advertiseAddress,omitempty"`
	BindPort         int    `json:"bindPort,omitempty"`
}

type kubeadmNodeRegistration struct {
	Name             string       `json:"name,omitempty"`
	CRISocket        string       `json:"criSocket,omitempty"`
	KubeletExtraArgs []kubeadmArg `json:"kubeletExtraArgs,omitempty"`
}

type kubeadmInitConfiguration struct {
	kubeadmTypeMeta  `json:",inline"`
	NodeRegistration kubeadmNodeRegistration `json:"nodeRegistration"`
	LocalAPIEndpoint kubeadmAPIEndpoint      `json:"localAPIEndpoint"`
	SkipPhases       []string                `json:"skipPhases,omitempty"`
}

type kubeadmFileDiscovery struct {
	KubeConfigPath string `json:"kubeConfigPath"`
}

type kubeadmDiscovery struct {
	File *kubeadmFileDiscovery `json:"file,omitempty"`
}

type kubeadmJoinControlPlane struct {
	LocalAPIEndpoint kubeadmAPIEndpoint `json:"localAPIEndpoint"`
}

type kubeadmJoinConfiguration struct {
	kubeadmTypeMeta  `json:",inline"`
	NodeRegistration kubeadmNodeRegistration  `json:"nodeRegistration"`
	CACertPath       string                   `json:"caCertPath,omitempty"`
	Discovery        kubeadmDiscovery         `json:"discovery"`
	ControlPlane     *kubeadmJoinControlPlane `json:"controlPlane,omitempty"`
	SkipPhases       []string                 `json:"skipPhases,omitempty"`
}

type kubeadmLocalEtcd struct {
	DataDir        string       `json:"dataDir"`
	ExtraArgs      []kubeadmArg `json:"extraArgs,omitempty"`
	ServerCertSANs []string     `json:"serverCertSANs,omitempty"`
	PeerCertSANs   []string     `json:"peerCertSANs,omitempty"`
}

type kubeadmExternalEtcd struct {
	Endpoints []string `json:"endpoints"`
	CAFile    string   `json:"caFile"`
	CertFile  string   `json:"certFile"`
	KeyFile   string   `json:"keyFile"`
}

type kubeadmEtcd struct {
	Local    *kubeadmLocalEtcd    `json:"local,omitempty"`
	External *kubeadmExternalEtcd `json:"external,omitempty"`
}

type kubeadmNetworking struct {
	ServiceSubnet string `json:"serviceSubnet,omitempty"`
	PodSubnet     string `json:"podSubnet,omitempty"`
	DNSDomain     string `json:"dnsDomain,omitempty"`
}

type kubeadmAPIServer struct {
	CertSANs []string `json:"certSANs,omitempty"`
}

type kubeadmDuration string

type kubeadmClusterConfiguration struct {
	kubeadmTypeMeta             `json:",inline"`
	ClusterName                 string            `json:"clusterName"`
	KubernetesVersion           string            `json:"kubernetesVersion"`
	ControlPlaneEndpoint        string            `json:"controlPlaneEndpoint"`
	CertificatesDir             string            `json:"certificatesDir"`
	EncryptionAlgorithm         string            `json:"encryptionAlgorithm"`
	CertificateValidityPeriod   kubeadmDuration   `json:"certificateValidityPeriod"`
	CACertificateValidityPeriod kubeadmDuration   `json:"caCertificateValidityPeriod"`
	Networking                  kubeadmNetworking `json:"networking"`
	APIServer                   kubeadmAPIServer  `json:"apiServer"`
	Etcd                        kubeadmEtcd       `json:"etcd"`
}

// KubeadmFile is one rendered file, relative to a host's output folder.
type KubeadmFile struct {
	Host string // node or etcd host name
	Name string // file name, e.g. "kubeadm.yaml"
	Data []byte
}

// Kubeadm renders the kubeadm v1beta4 configuration every host needs:
//
//   - the first control-plane node: InitConfiguration + ClusterConfiguration;
//   - every other control-plane node: a JoinConfiguration (control plane) in
//     kubeadm.yaml, for `kubeadm join --config`, and the same cluster-wide
//     ClusterConfiguration in kubeadm-cluster.yaml (what the cluster's
//     kubeadm-config ConfigMap holds, for `kubeadm init phase` commands on
//     that host);
//   - with the external topology, every etcd host: a ClusterConfiguration
//     whose etcd.local describes that member, for `kubeadm init phase etcd
//     local --config` as in kubeadm's HA etcd guide.
//
// Certificates come from haplane (`haplane pki generate` or `haplane join`),
// so the certs phase finds them in place and keeps them; joining nodes
// discover the cluster through the admin.conf haplane wrote, so no token or
// scp is needed.
func Kubeadm(c *config.Cluster) ([]KubeadmFile, error) {
	return kubeadmWith(c, "/etc/kubernetes/admin.conf")
}

// kubeadmWith renders with the discovery kubeconfig at discovery (kubeadm
// checks that the file exists, so tests point it at a real one).
func kubeadmWith(c *config.Cluster, discovery string) ([]KubeadmFile, error) {
	// One ClusterConfiguration for every control-plane node: kubeadm init
	// uploads cp1's copy to the kubeadm-config ConfigMap and kubeadm join
	// reads it from there, so anything node-specific in it would reach every
	// other node with cp1's values.
	cc := kubeadmCluster(c)
	var out []KubeadmFile
	for i, n := range c.Nodes {
		// Per-node settings live here; kubeadm derives the stacked etcd
		// member's --name, listen/advertise URLs and --initial-cluster from
		// nodeRegistration.name and the local API endpoint's address (init:
		// a one-member cluster; join --control-plane: member add, then
		// state "existing").
		nr := kubeadmNodeRegistration{
			Name:             n.Name,
			CRISocket:        "unix:///var/run/containerd/containerd.sock",
			KubeletExtraArgs: []kubeadmArg{{Name: "node-ip", Value: n.Address}},
		}
		ep := kubeadmAPIEndpoint{AdvertiseAddress: n.Address, BindPort: c.ControlPlaneEndpoint.APIServerPort}
		if i == 0 {
			data, err := kubeadmDocs(kubeadmInitConfiguration{
				kubeadmTypeMeta:  kubeadmTypeMeta{kubeadmAPIVersion, "InitConfiguration"},
				NodeRegistration: nr,
				LocalAPIEndpoint: ep,
			}, cc)
			if err != nil {
				return nil, fmt.Errorf("render: kubeadm config for %s: %w", n.Name, err)
			}
			out = append(out, KubeadmFile{Host: n.Name, Name: "kubeadm.yaml", Data: data})
			continue
		}
		join, err := kubeadmDocs(kubeadmJoinConfiguration{
			kubeadmTypeMeta:  kubeadmTypeMeta{kubeadmAPIVersion, "JoinConfiguration"},
			NodeRegistration: nr,
			CACertPath:       path.Join(c.Certificates.Dir, "ca.crt"),
			Discovery:        kubeadmDiscovery{File: &kubeadmFileDiscovery{KubeConfigPath: discovery}},
			ControlPlane:     &kubeadmJoinControlPlane{LocalAPIEndpoint: ep},
		})
		if err != nil {
			return nil, fmt.Errorf("render: kubeadm config for %s: %w", n.Name, err)
		}
		cluster, err := kubeadmDocs(cc)
		if err != nil {
			return nil, fmt.Errorf("render: kubeadm config for %s: %w", n.Name, err)
		}
		out = append(out,
			KubeadmFile{Host: n.Name, Name: "kubeadm.yaml", Data: join},
			KubeadmFile{Host: n.Name, Name: "kubeadm-cluster.yaml", Data: cluster})
	}
	if c.Etcd.Topology == config.TopologyExternal {
		for _, e := range c.Etcd.Nodes {
			data, err := kubeadmDocs(kubeadmEtcdHost(c, e.Name, e.Address))
			if err != nil {
				return nil, fmt.Errorf("render: kubeadm etcd config for %s: %w", e.Name, err)
			}
			out = append(out, KubeadmFile{Host: e.Name, Name: "kubeadm-etcd.yaml", Data: data})
		}
	}
	return out, nil
}

// kubeadmClusterBase is the ClusterConfiguration without its etcd section.
func kubeadmClusterBase(c *config.Cluster) kubeadmClusterConfiguration {
	return kubeadmClusterConfiguration{
		kubeadmTypeMeta:             kubeadmTypeMeta{kubeadmAPIVersion, "ClusterConfiguration"},
		ClusterName:                 c.Name,
		KubernetesVersion:           c.KubernetesVersion,
		ControlPlaneEndpoint:        net.JoinHostPort(c.EndpointHost(), strconv.Itoa(c.ControlPlaneEndpoint.Port)),
		CertificatesDir:             c.Certificates.Dir,
		EncryptionAlgorithm:         kubeadmEncryption(c.Certificates.KeyAlgorithm),
		CertificateValidityPeriod:   kubeadmDuration(c.Certificates.Validity.Duration.String()),
		CACertificateValidityPeriod: kubeadmDuration(c.Certificates.CAValidity.Duration.String()),
		Networking: kubeadmNetworking{
			ServiceSubnet: c.Networking.ServiceSubnet,
			PodSubnet:     c.Networking.PodSubnet,
			DNSDomain:     c.Networking.DNSDomain,
		},
		APIServer: kubeadmAPIServer{CertSANs: kubeadmAPIServerSANs(c)},
	}
}

// kubeadmCluster builds the cluster-wide ClusterConfiguration of the
// control-plane nodes. Stacked etcd.local carries only the data folder: no
// member name, URLs or initial cluster (kubeadm derives them per node), and
// no cert SANs: haplane issues the etcd certificates and kubeadm keeps
// existing ones as they are (v1.37.1 does not compare their SANs with the
// config), and kubeadm's own defaults (node name, localhost, the advertise
// address, 127.0.0.1, ::1) are what haplane's certificates carry anyway.
func kubeadmCluster(c *config.Cluster) kubeadmClusterConfiguration {
	cc := kubeadmClusterBase(c)
	if c.Etcd.Topology == config.TopologyStacked {
		cc.Etcd.Local = &kubeadmLocalEtcd{DataDir: c.Etcd.DataDir}
		return cc
	}
	var eps []string
	for _, m := range c.EtcdMembers() {
		eps = append(eps, etcdURL(m.Address, c.Etcd.ClientPort))
	}
	cc.Etcd.External = &kubeadmExternalEtcd{
		Endpoints: eps,
		CAFile:    path.Join(c.Certificates.Dir, "etcd", "ca.crt"),
		CertFile:  path.Join(c.Certificates.Dir, "apiserver-etcd-client.crt"),
		KeyFile:   path.Join(c.Certificates.Dir, "apiserver-etcd-client.key"),
	}
	return cc
}

// kubeadmEtcdHost builds the ClusterConfiguration of one external etcd host,
// for `kubeadm init phase etcd local --config` as in kubeadm's HA etcd
// guide: each host gets its own file (nothing is shared through a
// ConfigMap), and all members start together as one new cluster, so the
// member's name, URLs and the full initial cluster belong here.
func kubeadmEtcdHost(c *config.Cluster, name, addr string) kubeadmClusterConfiguration {
	cc := kubeadmClusterBase(c)
	var initial []string
	for _, m := range c.EtcdMembers() {
		initial = append(initial, m.Name+"="+etcdURL(m.Address, c.Etcd.PeerPort))
	}
	cc.Etcd.Local = &kubeadmLocalEtcd{
		DataDir: c.Etcd.DataDir,
		ExtraArgs: []kubeadmArg{
			{Name: "name", Value: name},
			{Name: "initial-cluster", Value: strings.Join(initial, ",")},
			{Name: "initial-cluster-state", Value: "new"},
			{Name: "initial-cluster-token", Value: c.Name + "-etcd"},
			{Name: "listen-client-urls", Value: "https://127.0.0.1:" + strconv.Itoa(c.Etcd.ClientPort) + "," + etcdURL(addr, c.Etcd.ClientPort)},
			{Name: "advertise-client-urls", Value: etcdURL(addr, c.Etcd.ClientPort)},
			{Name: "listen-peer-urls", Value: etcdURL(addr, c.Etcd.PeerPort)},
			{Name: "initial-advertise-peer-urls", Value: etcdURL(addr, c.Etcd.PeerPort)},
		},
		ServerCertSANs: []string{name, addr},
		PeerCertSANs:   []string{name, addr},
	}
	return cc
}

// kubeadmAPIServerSANs are the extra apiserver SANs: the VIP and DNS name
// every client uses, exactly the extras haplane's PKI puts on each node's
// apiserver certificate (pki.Plan.ExtraAPIServerSANs). kubeadm adds each
// node's own name and address itself, and `kubeadm join --control-plane`
// checks an existing certificate against this list: a list naming every
// node refused each joiner's own certificate ("valid for cp2 ..., not
// cp1").
func kubeadmAPIServerSANs(c *config.Cluster) []string {
	var out []string
	for _, s := range []string{c.ControlPlaneEndpoint.VIP, c.ControlPlaneEndpoint.DNSName} {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func kubeadmEncryption(alg string) string {
	if alg == config.KeyECDSAP256 {
		return "ECDSA-P256"
	}
	return "RSA-2048"
}

func etcdURL(addr string, port int) string {
	return "https://" + net.JoinHostPort(addr, strconv.Itoa(port))
}

// kubeadmDocs marshals documents into one multi-document YAML file.
func kubeadmDocs(docs ...any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Rendered by haplane from the cluster file; edit the cluster file, not this.\n")
	for i, d := range docs {
		y, err := yaml.Marshal(d)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}
