// Package pki owns the cluster's certificates: the set kubeadm v1.37 writes
// (names, subjects, SANs, key usages, validity), generated here as PEM bytes
// without calling kubeadm, laid out per host like /etc/kubernetes/pki, and
// checked later for expiry, chain and SAN drift.
//
// Generation is pure: a Plan and the existing material in, PEM bytes out.
// Writing (atomic, keys 0600) is in write.go; nothing here imports anything
// beyond the standard library.
package pki

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// Key algorithms, as in the cluster file.
const (
	RSA2048   = "rsa2048"
	ECDSAP256 = "ecdsa-p256"
)

// Roles a host can have.
const (
	RoleControlPlane = "control-plane"
	RoleEtcd         = "etcd" // an external etcd host
)

// Host is one machine that receives certificates.
type Host struct {
	Name    string
	Address netip.Addr
	Role    string
}

// Plan describes a cluster's PKI. Durations are kubeadm's when zero.
type Plan struct {
	ClusterName string
	// EndpointHost and EndpointPort are what clients use: the VIP (or DNS
	// name) and the load balancer's port.
	EndpointHost string
	EndpointPort int
	// APIServerPort is where each kube-apiserver listens.
	APIServerPort int
	// ExtraAPIServerSANs are added to every apiserver certificate: the VIP
	// and DNS name, as kubeadm's apiServer.certSANs.
	ExtraAPIServerSANs []string
	ServiceSubnet      netip.Prefix
	DNSDomain          string
	// ExternalEtcd is the external topology: etcd server/peer certificates
	// go to the etcd hosts, not to control-plane hosts.
	ExternalEtcd bool
	Hosts        []Host

	Validity     time.Duration // leaves; kubeadm: 365 days
	CAValidity   time.Duration // CAs; kubeadm: 3650 days
	RenewBefore  time.Duration // re-issue leaves expiring within this
	KeyAlgorithm string
}

// Kubeadm's defaults.
const (
	DefaultValidity   = 365 * 24 * time.Hour
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// Backdate is how far before "now" kubeadm starts a certificate's
	// validity, to tolerate clock skew between hosts.
	Backdate = 5 * time.Minute
)

func (p *Plan) validity() time.Duration {
	if p.Validity == 0 {
		return DefaultValidity
	}
	return p.Validity
}

func (p *Plan) caValidity() time.Duration {
	if p.CAValidity == 0 {
		return DefaultCAValidity
	}
	return p.CAValidity
}

func (p *Plan) keyAlgorithm() string {
	if p.KeyAlgorithm == "" {
		return RSA2048
	}
	return p.KeyAlgorithm
}

// Host returns the named host.
func (p *Plan) Host(name string) (Host, bool) {
	for _, h := range p.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// Validate checks the plan is complete enough to generate from.
func (p *Plan) Validate() error {
	if p.ClusterName == "" || p.EndpointHost == "" || p.EndpointPort == 0 || p.APIServerPort == 0 {
		return fmt.Errorf("pki: plan needs a cluster name, endpoint host and ports")
	}
	if !p.ServiceSubnet.IsValid() || p.DNSDomain == "" {
		return fmt.Errorf("pki: plan needs a service subnet and DNS domain")
	}
	if a := p.keyAlgorithm(); a != RSA2048 && a != ECDSAP256 {
		return fmt.Errorf("pki: key algorithm %q is not %s or %s", a, RSA2048, ECDSAP256)
	}
	if len(p.Hosts) == 0 {
		return fmt.Errorf("pki: plan has no hosts")
	}
	for _, h := range p.Hosts {
		if h.Name == "" || !h.Address.IsValid() || (h.Role != RoleControlPlane && h.Role != RoleEtcd) {
			return fmt.Errorf("pki: host %+v needs a name, an address and a role", h)
		}
	}
	return nil
}

// CA names, which are also their file stems.
const (
	CA           = "ca"
	FrontProxyCA = "front-proxy-ca"
	EtcdCA       = "etcd/ca"
)

// CASpec describes a certificate authority as kubeadm makes it.
type CASpec struct {
	Name string // file stem
	CN   string
}

// CAs lists the three CAs of a kubeadm cluster.
var CAs = []CASpec{
	{Name: CA, CN: "kubernetes"},
	{Name: FrontProxyCA, CN: "front-proxy-ca"},
	{Name: EtcdCA, CN: "etcd-ca"},
}

// LeafSpec describes a leaf certificate as kubeadm makes it.
type LeafSpec struct {
	Name   string // file stem, e.g. "apiserver", "etcd/server"
	CA     string // signing CA's name
	CN     string
	Orgs   []string
	DNS    []string
	IPs    []netip.Addr
	Usages []x509.ExtKeyUsage
}

var (
	serverAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	both       = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
)

// firstServiceIP is the kubernetes Service's address: the subnet's first
// host address.
func firstServiceIP(p netip.Prefix) netip.Addr {
	return p.Masked().Addr().Next()
}

// Leaves returns the leaf certificates host needs, in kubeadm's order.
func (p *Plan) Leaves(host string) ([]LeafSpec, error) {
	h, ok := p.Host(host)
	if !ok {
		return nil, fmt.Errorf("pki: host %q is not in the plan", host)
	}
	etcdMember := func() []LeafSpec {
		// kubeadm: etcd server and peer certificates carry the node name,
		// localhost and its address, 127.0.0.1 and ::1.
		dns := []string{h.Name, "localhost"}
		ips := []netip.Addr{h.Address, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
		return []LeafSpec{
			{Name: "etcd/server", CA: EtcdCA, CN: h.Name, DNS: dns, IPs: ips, Usages: both},
			{Name: "etcd/peer", CA: EtcdCA, CN: h.Name, DNS: dns, IPs: ips, Usages: both},
			{Name: "etcd/healthcheck-client", CA: EtcdCA, CN: "kube-etcd-healthcheck-client", Usages: clientAuth},
		}
	}
	if h.Role == RoleEtcd {
		return etcdMember(), nil
	}
	dns := []string{h.Name, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + p.DNSDomain}
	ips := []netip.Addr{firstServiceIP(p.ServiceSubnet), h.Address}
	for _, s := range append([]string{p.EndpointHost}, p.ExtraAPIServerSANs...) {
		if a, err := netip.ParseAddr(s); err == nil {
			if !slices.Contains(ips, a) {
				ips = append(ips, a)
			}
		} else if s != "" && !slices.Contains(dns, s) {
			dns = append(dns, s)
		}
	}
	out := []LeafSpec{
		{Name: "apiserver", CA: CA, CN: "kube-apiserver", DNS: dns, IPs: ips, Usages: serverAuth},
		{Name: "apiserver-kubelet-client", CA: CA, CN: "kube-apiserver-kubelet-client", Usages: clientAuth},
		{Name: "front-proxy-client", CA: FrontProxyCA, CN: "front-proxy-client", Usages: clientAuth},
	}
	if !p.ExternalEtcd {
		out = append(out, etcdMember()...)
	}
	out = append(out, LeafSpec{Name: "apiserver-etcd-client", CA: EtcdCA, CN: "kube-apiserver-etcd-client", Usages: clientAuth})
	return out, nil
}

// CAKeysFor reports which CA keys a host holds. Control-plane hosts hold
// every CA key (they sign kubelet and join certificates); external etcd
// hosts hold none, as in kubeadm's HA guide.
func (p *Plan) CAKeysFor(host string) []string {
	h, _ := p.Host(host)
	if h.Role == RoleControlPlane {
		if p.ExternalEtcd {
			return []string{CA, FrontProxyCA}
		}
		return []string{CA, FrontProxyCA, EtcdCA}
	}
	return nil
}

// CACertsFor lists the CA certificates a host holds.
func (p *Plan) CACertsFor(host string) []string {
	h, _ := p.Host(host)
	if h.Role == RoleControlPlane {
		return []string{CA, FrontProxyCA, EtcdCA}
	}
	return []string{EtcdCA}
}

// KubeconfigSpec describes one of kubeadm's kubeconfig files.
type KubeconfigSpec struct {
	File   string // e.g. "admin.conf"
	User   string // the kubeconfig user and certificate CN
	Orgs   []string
	Server string // https://host:port
}

// Kubeconfigs returns the kubeconfigs of a control-plane host. As kubeadm
// v1.37 does, admin.conf and super-admin.conf point at the control-plane
// endpoint (the VIP), while controller-manager.conf and scheduler.conf point
// at the node's own apiserver, so those components keep working on a node
// that cannot reach the VIP.
func (p *Plan) Kubeconfigs(host string) []KubeconfigSpec {
	h, _ := p.Host(host)
	if h.Role != RoleControlPlane {
		return nil
	}
	endpoint := "https://" + joinHostPort(p.EndpointHost, p.EndpointPort)
	local := "https://" + joinHostPort(h.Address.String(), p.APIServerPort)
	return []KubeconfigSpec{
		{File: "admin.conf", User: "kubernetes-admin", Orgs: []string{"kubeadm:cluster-admins"}, Server: endpoint},
		{File: "super-admin.conf", User: "kubernetes-super-admin", Orgs: []string{"system:masters"}, Server: endpoint},
		{File: "controller-manager.conf", User: "system:kube-controller-manager", Server: local},
		{File: "scheduler.conf", User: "system:kube-scheduler", Server: local},
	}
}

func joinHostPort(host string, port int) string {
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

// LeafValidity is how long leaves are valid (kubeadm's default when unset).
func (p *Plan) LeafValidity() time.Duration { return p.validity() }
