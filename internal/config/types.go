// Package config owns the cluster file, haplane.yaml: its versioned schema,
// the defaults applied to it and its validation. Load reports every problem
// at once, each with the file, line and field path it concerns, so an
// operator can fix a file in one pass.
//
// Field names in the file are the `json` tags below (camelCase, as in
// Kubernetes APIs). Durations are strings such as "100ms" or "8760h".
package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Schema identifiers accepted in apiVersion and kind.
const (
	APIVersion = "haplane.dev/v1alpha1"
	Kind       = "Cluster"
)

// Defaults applied by SetDefaults. They are exported so the commented
// example written by `haplane init` and the documentation stay in step.
const (
	DefaultFrontendPort       = 8443
	DefaultAPIServerPort      = 6443
	DefaultVRRPVersion        = 3
	DefaultAdvertInterval     = 100 * time.Millisecond
	DefaultVRRPVersion2Advert = time.Second
	// DefaultAddressLifetime is the kernel lifetime of the VIP on the
	// master's link, renewed four times per lifetime while the master
	// advertises: an agent killed, hung or OOM-killed loses the address
	// within about 1.5s (lifetime, plus the last renew period, plus the
	// kernel's sub-second rounding), before a restarted agent could
	// remove it.
	DefaultAddressLifetime = time.Second
	// MaxAddressLifetime bounds vip.addressLifetime: beyond it a dead
	// agent's VIP lingers as long as a permanent one would, in practice.
	MaxAddressLifetime = time.Hour
	// DefaultBasePriority is the first node's priority; the next get 249,
	// 248, ... High priorities keep RFC 5798's Skew_Time, (256 -
	// priority)/256 of the advert interval, near zero: a backup takes over
	// after 3 intervals plus about 3ms rather than plus 42ms at 149.
	DefaultBasePriority      = 250
	DefaultServiceSubnet     = "10.96.0.0/12"
	DefaultDNSDomain         = "cluster.local"
	DefaultKubernetesVersion = "v1.37.1"
	DefaultCertValidity      = 365 * 24 * time.Hour      // kubeadm's leaf validity
	DefaultCAValidity        = 10 * 365 * 24 * time.Hour // kubeadm's CA validity
	DefaultRenewBefore       = 30 * 24 * time.Hour
	// DefaultNodeLocalListen is the worker load balancer's frontend.
	DefaultNodeLocalListen = "127.0.0.1:6443"
	// DefaultNodeLocalKubeconfig is the kubelet's own kubeconfig.
	DefaultNodeLocalKubeconfig = "/etc/kubernetes/kubelet.conf"
	DefaultRenewCheck          = time.Hour
	DefaultKeyAlgorithm        = KeyRSA2048
	DefaultCertificatesDir     = "/etc/kubernetes/pki"
	DefaultEtcdClientPort      = 2379
	DefaultEtcdPeerPort        = 2380
	DefaultEtcdDataDir         = "/var/lib/etcd"
	DefaultLBAlgorithm         = "roundrobin"
	DefaultHealthPath          = "/readyz"
	DefaultLivenessPath        = "/livez?exclude=etcd"
	DefaultHealthInterval      = 200 * time.Millisecond
	DefaultHealthTimeout       = 1 * time.Second
	DefaultHealthFall          = 2
	DefaultHealthRise          = 2
	DefaultConnectTimeout      = 500 * time.Millisecond
	DefaultHandshakeTimeout    = time.Second
)

// Key algorithms for generated certificates.
const (
	KeyRSA2048   = "rsa2048"
	KeyECDSAP256 = "ecdsa-p256"
)

// Etcd topologies.
const (
	TopologyStacked  = "stacked"
	TopologyExternal = "external"
)

// Cluster is the root of haplane.yaml.
type Cluster struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`

	// Name identifies the cluster; it names the kubeconfig cluster entry and
	// seeds the etcd cluster token.
	Name string `json:"name"`
	// KubernetesVersion is the control-plane version, e.g. "v1.37.1".
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`

	ControlPlaneEndpoint Endpoint     `json:"controlPlaneEndpoint"`
	VIP                  VIP          `json:"vip"`
	LoadBalancer         LoadBalancer `json:"loadBalancer,omitempty"`
	// Nodes are the control-plane hosts: each runs kube-apiserver, the
	// haplane agent and, in the stacked topology, an etcd member.
	Nodes        []Node       `json:"nodes"`
	Etcd         Etcd         `json:"etcd,omitempty"`
	Networking   Networking   `json:"networking,omitempty"`
	Certificates Certificates `json:"certificates,omitempty"`
}

// Endpoint is where every client reaches the API: the virtual IP and the
// load balancer's frontend port on it.
type Endpoint struct {
	// VIP is the virtual IP address held by one node at a time.
	VIP string `json:"vip"`
	// Port is the load balancer's frontend port on the VIP (default 8443).
	Port int `json:"port,omitempty"`
	// APIServerPort is where every kube-apiserver listens (default 6443).
	APIServerPort int `json:"apiServerPort,omitempty"`
	// DNSName, when set, is added to the apiserver certificate and used as
	// the endpoint in kubeconfigs instead of the VIP.
	DNSName string `json:"dnsName,omitempty"`
}

// VIP modes: how the nodes make the virtual IP reachable.
const (
	// VIPModeVRRP elects one holder of the VIP on a shared link.
	VIPModeVRRP = "vrrp"
	// VIPModeBGP has every healthy node announce the VIP as a host route
	// to its BGP peers: active-active ECMP across routed networks.
	VIPModeBGP = "bgp"
)

// BGP defaults: short timers, since with no BFD the hold time is what
// detects a node that died without withdrawing.
const (
	DefaultBGPHoldTime  = 3 * time.Second
	DefaultBGPKeepalive = time.Second
	DefaultBGPPeerPort  = 179
)

// VIP configures how the virtual IP is held: the VRRP speaker (mode vrrp,
// default) or BGP announcements (mode bgp; the VRRP fields are then unused).
type VIP struct {
	// Mode is "vrrp" (default) or "bgp".
	Mode string `json:"mode,omitempty"`
	// BGP configures the announcements; required with mode bgp only.
	BGP *BGP `json:"bgp,omitempty"`
	// Interface is the link the VIP lives on; a node may override it.
	Interface string `json:"interface"`
	// VirtualRouterID is the VRID, 1..255, shared by all nodes and unique
	// on the link.
	VirtualRouterID int `json:"virtualRouterID"`
	// Version is the VRRP version, 2 (RFC 3768) or 3 (RFC 5798, default).
	Version int `json:"version,omitempty"`
	// AdvertInterval is the advertisement interval (default 100ms with
	// version 3; version 2 only supports whole seconds, default 1s).
	AdvertInterval Duration `json:"advertInterval,omitempty"`
	// Preempt lets a higher-priority node take the VIP back (default true).
	Preempt *bool `json:"preempt,omitempty"`
	// PreemptDelay waits this long after start before preempting.
	PreemptDelay Duration `json:"preemptDelay,omitempty"`
	// Unicast sends adverts to the other nodes' addresses instead of the
	// VRRP multicast group, for networks that drop multicast.
	Unicast bool `json:"unicast,omitempty"`
	// Auth is VRRPv2 simple-password authentication, as keepalived's
	// auth_type PASS. Version 3 has no authentication.
	Auth *VIPAuth `json:"auth,omitempty"`
	// AddressLifetime is the valid and preferred lifetime the kernel
	// gives the VIP on the master's link (whole seconds, default 1s); the
	// speaker renews it four times per lifetime while it is master and its
	// adverts go out. A node whose agent dies without releasing the VIP
	// (kill -9, a hang, the OOM killer) drops it after about this long
	// plus a quarter of it, so it stops answering ARP for the VIP.
	AddressLifetime Duration `json:"addressLifetime,omitempty"`
}

// BGP is the announcer every control-plane node runs with vip.mode bgp: a
// node announces the VIP as a /32 (or /128) with itself as next hop while
// its local health allows, and withdraws it otherwise and before it stops.
type BGP struct {
	// LocalASN is the nodes' autonomous system number, 1..4294967295.
	LocalASN uint32 `json:"localASN"`
	// RouterID is the BGP identifier, an IPv4 address (default: the
	// node's address, which must then be IPv4). Set here, all nodes share
	// it, so it is only for single-node setups; leave it out otherwise.
	RouterID string `json:"routerID,omitempty"`
	// Peers are the routers every node opens a session to.
	Peers []BGPPeer `json:"peers"`
	// HoldTime is the BGP hold time, whole seconds from 3s (RFC 4271
	// §4.2; default 3s): a peer drops a silent node's route after it.
	HoldTime Duration `json:"holdTime,omitempty"`
	// KeepaliveInterval is sent below the hold time (whole seconds,
	// default 1s).
	KeepaliveInterval Duration `json:"keepaliveInterval,omitempty"`
	// Communities are attached to the VIP route, each "ASN:value" with
	// both halves 0..65535 (RFC 1997).
	Communities []string `json:"communities,omitempty"`
}

// BGPPeer is one router.
type BGPPeer struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	// Password turns on TCP MD5 signatures (RFC 2385) for the session.
	Password string `json:"password,omitempty"`
	// Port is the peer's BGP port (default 179).
	Port int `json:"port,omitempty"`
	// BFD runs single-hop BFD (RFC 5880/5881) with the peer, 100ms x 5:
	// a node that dies loses its route in about 500ms instead of the
	// hold time. The router must run BFD for this session too.
	BFD bool `json:"bfd,omitempty"`
}

// VIPAuth is VRRPv2 authentication.
type VIPAuth struct {
	// Type is "pass" (simple text password, at most 8 bytes).
	Type     string `json:"type"`
	Password string `json:"password"`
}

// LoadBalancer configures the L4 proxy on the VIP's frontend port.
type LoadBalancer struct {
	// Algorithm is "roundrobin" (default) or "leastconn".
	Algorithm string `json:"algorithm,omitempty"`
	// ConnectTimeout bounds a connect to one backend before the client's
	// connection is retried on another (default 500ms).
	ConnectTimeout Duration `json:"connectTimeout,omitempty"`
	// HandshakeTimeout is how long an apiserver may take to answer a
	// client's TLS ClientHello (default 1s). If it closes, resets or stays
	// silent until then, the client is moved to another apiserver and its
	// ClientHello replayed there (nothing of the session happened yet).
	HandshakeTimeout Duration `json:"handshakeTimeout,omitempty"`
	// Drain closes sessions to a backend this long after it is marked
	// down; zero leaves them open.
	Drain Duration `json:"drain,omitempty"`
	// Loops is the number of event loops (threads, each an epoll set)
	// that run every session; 0 (default) is one per CPU the process may
	// use. They are started once per process, by its first load balancer.
	Loops       int         `json:"loops,omitempty"`
	HealthCheck HealthCheck `json:"healthCheck,omitempty"`
	// NodeLocal is the load balancer `haplane agent --role worker` runs
	// on every worker, so that its kubelet and kube-proxy reach every
	// apiserver without going through the VIP holder.
	NodeLocal NodeLocalLB `json:"nodeLocal,omitempty"`
}

// NodeLocalLB is a worker's own load balancer to every kube-apiserver, with
// the same health checks (healthCheck above) and ClientHello replay as the
// control plane's.
type NodeLocalLB struct {
	// Listen is its frontend (default 127.0.0.1:6443). A loopback
	// address keeps it private to the node.
	Listen string `json:"listen,omitempty"`
	// Discovery is where the apiservers come from: "endpointslice"
	// (default) watches the kubernetes Service's EndpointSlices, starting
	// from the nodes of this file, so adding a control-plane node needs no
	// edit on the workers; "none" uses this file's nodes only.
	Discovery string `json:"discovery,omitempty"`
	// Kubeconfig is the credential the discovery watch uses (default
	// /etc/kubernetes/kubelet.conf, the worker's own node identity).
	Kubeconfig string `json:"kubeconfig,omitempty"`
}

// Discovery modes of the node-local load balancer.
const (
	DiscoveryEndpointSlice = "endpointslice"
	DiscoveryNone          = "none"
)

// HealthCheck is the active check of each kube-apiserver.
type HealthCheck struct {
	// Path is fetched over HTTPS (default /readyz).
	Path string `json:"path,omitempty"`
	// LivenessPath is fetched when Path fails (default
	// /livez?exclude=etcd; "none" turns it off). When no apiserver is
	// ready but some answer it, the pool is in panic: new sessions go to
	// those live ones rather than being refused, and the VIP stays put,
	// since every node sees the same. That is etcd's quorum loss: every
	// /readyz fails together, while the apiservers still serve discovery,
	// /livez and whatever their watch caches hold.
	LivenessPath string   `json:"livenessPath,omitempty"`
	Interval     Duration `json:"interval,omitempty"`
	Timeout      Duration `json:"timeout,omitempty"`
	// Fall consecutive failures mark a backend down; Rise successes mark
	// it up again.
	Fall int `json:"fall,omitempty"`
	Rise int `json:"rise,omitempty"`
}

// Node is one control-plane host.
type Node struct {
	// Name is the host's name; it is the CN of its etcd certificates and
	// a SAN of its apiserver certificate, as kubeadm does.
	Name string `json:"name"`
	// Address is the host's IP address on the VIP's link.
	Address string `json:"address"`
	// Priority is this node's VRRP priority, 1..254. When no node sets it,
	// nodes get 250, 249, 248... in file order; when some do, all must.
	Priority int `json:"priority,omitempty"`
	// Interface overrides vip.interface on this node.
	Interface string `json:"interface,omitempty"`
}

// Etcd describes the etcd cluster.
type Etcd struct {
	// Topology is "stacked" (a member on every control-plane node,
	// default) or "external" (members on their own hosts, in Nodes).
	Topology string `json:"topology,omitempty"`
	// Nodes are the external etcd hosts; only with topology external.
	Nodes []EtcdNode `json:"nodes,omitempty"`
	// RunBy says who runs the stacked members: EtcdRunByAgent (the
	// haplane agent, in-process; default) or EtcdRunByKubelet (kubeadm's
	// etcd static pods, as `kubeadm init`/`join --control-plane` make them
	// from the rendered etcd.local; the agent then runs none).
	RunBy      string `json:"runBy,omitempty"`
	ClientPort int    `json:"clientPort,omitempty"`
	PeerPort   int    `json:"peerPort,omitempty"`
	DataDir    string `json:"dataDir,omitempty"`
}

// Who runs the stacked etcd members (Etcd.RunBy).
const (
	EtcdRunByAgent   = "agent"
	EtcdRunByKubelet = "kubelet"
)

// AgentRunsMembers reports whether the haplane agent runs this cluster's
// etcd members on the hosts it serves (not kubelet).
func (e Etcd) AgentRunsMembers() bool { return e.RunBy != EtcdRunByKubelet }

// EtcdNode is an external etcd host.
type EtcdNode struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

// Networking holds the cluster's service network settings.
type Networking struct {
	ServiceSubnet string `json:"serviceSubnet,omitempty"`
	PodSubnet     string `json:"podSubnet,omitempty"`
	DNSDomain     string `json:"dnsDomain,omitempty"`
}

// Certificates configures the PKI.
type Certificates struct {
	// Dir is where a host keeps its PKI (default /etc/kubernetes/pki).
	Dir string `json:"dir,omitempty"`
	// Validity of leaf certificates (default 8760h, as kubeadm).
	Validity Duration `json:"validity,omitempty"`
	// CAValidity of the CAs (default 87600h, as kubeadm).
	CAValidity Duration `json:"caValidity,omitempty"`
	// RenewBefore re-issues a leaf that expires within this window.
	RenewBefore Duration `json:"renewBefore,omitempty"`
	// KeyAlgorithm is "rsa2048" (default, as kubeadm) or "ecdsa-p256".
	KeyAlgorithm string `json:"keyAlgorithm,omitempty"`
	// RenewCheckInterval is how often the agent looks for leaves within
	// renewBefore of expiry and renews them (default 1h, jittered ±10%).
	// Nodes renew one after the other, each this long after the previous
	// one in the file's order.
	RenewCheckInterval Duration `json:"renewCheckInterval,omitempty"`
}

// Duration is a time.Duration written as a string ("100ms") in the file.
type Duration struct{ time.Duration }

// MarshalText writes the duration in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// UnmarshalText parses Go duration syntax ("100ms", "8760h"), plus whole
// days ("365d"), which certificate lifetimes are usually thought in.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// ParseDuration is time.ParseDuration plus a whole-day form "Nd".
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok && n != "" && !strings.ContainsAny(n, "hmsuµn.") {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: want a number with a unit, e.g. 100ms, 3s, 8760h or 365d", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want a number with a unit, e.g. 100ms, 3s, 8760h or 365d", s)
	}
	return v, nil
}

// Helpers for consumers; they assume a validated, defaulted Cluster.

// NodeByName returns the control-plane node called name.
func (c *Cluster) NodeByName(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// VIPAddr returns the parsed virtual IP.
func (c *Cluster) VIPAddr() netip.Addr {
	a, _ := netip.ParseAddr(c.ControlPlaneEndpoint.VIP)
	return a
}

// FrontendAddr is the load balancer's listen address on the VIP.
func (c *Cluster) FrontendAddr() netip.AddrPort {
	return netip.AddrPortFrom(c.VIPAddr(), uint16(c.ControlPlaneEndpoint.Port))
}

// EndpointHost is the host part clients use: the DNS name if set, else the VIP.
func (c *Cluster) EndpointHost() string {
	if c.ControlPlaneEndpoint.DNSName != "" {
		return c.ControlPlaneEndpoint.DNSName
	}
	return c.ControlPlaneEndpoint.VIP
}

// NodeAddr returns a node's parsed address.
func (n Node) Addr() netip.Addr {
	a, _ := netip.ParseAddr(n.Address)
	return a
}

// APIServerAddrs lists every kube-apiserver (node address and API port), in
// file order: the load balancer's backends.
func (c *Cluster) APIServerAddrs() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		out = append(out, netip.AddrPortFrom(n.Addr(), uint16(c.ControlPlaneEndpoint.APIServerPort)))
	}
	return out
}

// EtcdMembers lists the etcd members: the control-plane nodes when stacked,
// the etcd nodes when external.
func (c *Cluster) EtcdMembers() []EtcdNode {
	if c.Etcd.Topology == TopologyExternal {
		return append([]EtcdNode(nil), c.Etcd.Nodes...)
	}
	out := make([]EtcdNode, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		out = append(out, EtcdNode{Name: n.Name, Address: n.Address})
	}
	return out
}

// InterfaceFor returns the VIP link for a node.
func (c *Cluster) InterfaceFor(n Node) string {
	if n.Interface != "" {
		return n.Interface
	}
	return c.VIP.Interface
}

// BGPMode reports vip.mode bgp.
func (v VIP) BGPMode() bool { return v.Mode == VIPModeBGP }

// RouterIDFor returns the BGP identifier of a node: vip.bgp.routerID if
// set, else the node's address.
func (c *Cluster) RouterIDFor(n Node) string {
	if c.VIP.BGP != nil && c.VIP.BGP.RouterID != "" {
		return c.VIP.BGP.RouterID
	}
	return n.Address
}

// PreemptEnabled reports vip.preempt, defaulting to true.
func (v VIP) PreemptEnabled() bool { return v.Preempt == nil || *v.Preempt }
