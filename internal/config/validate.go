package config

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// SetDefaults fills every field the file left empty. It is idempotent.
func (c *Cluster) SetDefaults() {
	if c.KubernetesVersion == "" {
		c.KubernetesVersion = DefaultKubernetesVersion
	}
	ep := &c.ControlPlaneEndpoint
	if ep.Port == 0 {
		ep.Port = DefaultFrontendPort
	}
	if ep.APIServerPort == 0 {
		ep.APIServerPort = DefaultAPIServerPort
	}

	v := &c.VIP
	if v.Mode == "" {
		v.Mode = VIPModeVRRP
	}
	if b := v.BGP; b != nil {
		if b.HoldTime.Duration == 0 {
			b.HoldTime.Duration = DefaultBGPHoldTime
		}
		if b.KeepaliveInterval.Duration == 0 {
			b.KeepaliveInterval.Duration = DefaultBGPKeepalive
		}
		for i := range b.Peers {
			if b.Peers[i].Port == 0 {
				b.Peers[i].Port = DefaultBGPPeerPort
			}
		}
	}
	if v.Version == 0 {
		v.Version = DefaultVRRPVersion
	}
	if v.AdvertInterval.Duration == 0 {
		if v.Version == 2 {
			v.AdvertInterval.Duration = DefaultVRRPVersion2Advert
		} else {
			v.AdvertInterval.Duration = DefaultAdvertInterval
		}
	}
	if v.AddressLifetime.Duration == 0 {
		v.AddressLifetime.Duration = DefaultAddressLifetime
	}
	// Distinct priorities by default: equal priorities leave the tie to the
	// address comparison and make the holder hard to predict.
	anySet := false
	for _, n := range c.Nodes {
		anySet = anySet || n.Priority != 0
	}
	if !anySet {
		for i := range c.Nodes {
			c.Nodes[i].Priority = max(DefaultBasePriority-i, 1)
		}
	}

	lb := &c.LoadBalancer
	if lb.Algorithm == "" {
		lb.Algorithm = DefaultLBAlgorithm
	}
	if lb.ConnectTimeout.Duration == 0 {
		lb.ConnectTimeout.Duration = DefaultConnectTimeout
	}
	if lb.HandshakeTimeout.Duration == 0 {
		lb.HandshakeTimeout.Duration = DefaultHandshakeTimeout
	}
	nl := &lb.NodeLocal
	if nl.Listen == "" {
		nl.Listen = DefaultNodeLocalListen
	}
	if nl.Discovery == "" {
		nl.Discovery = DiscoveryEndpointSlice
	}
	if nl.Kubeconfig == "" {
		nl.Kubeconfig = DefaultNodeLocalKubeconfig
	}
	hc := &lb.HealthCheck
	if hc.Path == "" {
		hc.Path = DefaultHealthPath
	}
	if hc.LivenessPath == "" {
		hc.LivenessPath = DefaultLivenessPath
	}
	if hc.Interval.Duration == 0 {
		hc.Interval.Duration = DefaultHealthInterval
	}
	if hc.Timeout.Duration == 0 {
		hc.Timeout.Duration = DefaultHealthTimeout
	}
	if hc.Fall == 0 {
		hc.Fall = DefaultHealthFall
	}
	if hc.Rise == 0 {
		hc.Rise = DefaultHealthRise
	}

	e := &c.Etcd
	if e.Topology == "" {
		e.Topology = TopologyStacked
	}
	if e.RunBy == "" {
		e.RunBy = EtcdRunByAgent
	}
	if e.ClientPort == 0 {
		e.ClientPort = DefaultEtcdClientPort
	}
	if e.PeerPort == 0 {
		e.PeerPort = DefaultEtcdPeerPort
	}
	if e.DataDir == "" {
		e.DataDir = DefaultEtcdDataDir
	}

	nw := &c.Networking
	if nw.ServiceSubnet == "" {
		nw.ServiceSubnet = DefaultServiceSubnet
	}
	if nw.DNSDomain == "" {
		nw.DNSDomain = DefaultDNSDomain
	}

	ct := &c.Certificates
	if ct.Dir == "" {
		ct.Dir = DefaultCertificatesDir
	}
	if ct.Validity.Duration == 0 {
		ct.Validity.Duration = DefaultCertValidity
	}
	if ct.CAValidity.Duration == 0 {
		ct.CAValidity.Duration = DefaultCAValidity
	}
	if ct.RenewBefore.Duration == 0 {
		ct.RenewBefore.Duration = DefaultRenewBefore
	}
	if ct.RenewCheckInterval.Duration == 0 {
		ct.RenewCheckInterval.Duration = DefaultRenewCheck
	}
	if ct.KeyAlgorithm == "" {
		ct.KeyAlgorithm = DefaultKeyAlgorithm
	}
}

// Validate checks a defaulted Cluster and returns every problem found, with
// field paths but no lines (Parse adds them). It returns nil when the
// cluster is valid.
func (c *Cluster) Validate() *Errors {
	errs := c.validate()
	if len(errs) == 0 {
		return nil
	}
	return &Errors{List: errs}
}

var (
	// RFC 1123 label, as Kubernetes object names.
	nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// RFC 1123 subdomain, as Kubernetes node names and DNS names.
	dnsRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	versionRE = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)
)

type checker struct{ errs []FieldError }

func (k *checker) add(path, format string, args ...any) {
	k.errs = append(k.errs, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// addr parses an IP address field; required reports an empty value.
func (k *checker) addr(path, s string) (netip.Addr, bool) {
	if s == "" {
		k.add(path, "required")
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		k.add(path, "%q is not an IP address", s)
		return netip.Addr{}, false
	}
	if a.Is4In6() {
		k.add(path, "%q is an IPv4-mapped IPv6 address; write it as IPv4", s)
		return netip.Addr{}, false
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast() {
		k.add(path, "%q cannot be used: unspecified, loopback, link-local and multicast addresses are not host addresses", s)
		return netip.Addr{}, false
	}
	return a, true
}

func (k *checker) port(path string, p int) {
	if p < 1 || p > 65535 {
		k.add(path, "port %d is out of range 1..65535", p)
	}
}

func (k *checker) positive(path string, d Duration) {
	if d.Duration <= 0 {
		k.add(path, "must be greater than zero, got %s", d.Duration)
	}
}

func (k *checker) ifname(path, s string) {
	if len(s) > 15 || strings.ContainsAny(s, "/ \t\n:") || s == "." || s == ".." {
		k.add(path, "%q is not a valid interface name (at most 15 characters, no '/', ':' or spaces)", s)
	}
}

func (c *Cluster) validate() []FieldError {
	k := &checker{}
	if c.APIVersion != APIVersion {
		if c.APIVersion == "" {
			k.add("apiVersion", "required: %q", APIVersion)
		} else {
			k.add("apiVersion", "%q is not supported; this haplane reads %q", c.APIVersion, APIVersion)
		}
	}
	if c.Kind != Kind {
		if c.Kind == "" {
			k.add("kind", "required: %q", Kind)
		} else {
			k.add("kind", "%q is not supported; want %q", c.Kind, Kind)
		}
	}
	switch {
	case c.Name == "":
		k.add("name", "required")
	case !nameRE.MatchString(c.Name):
		k.add("name", "%q must be lower-case letters, digits and '-', at most 63 characters, starting and ending with a letter or digit", c.Name)
	}
	if !versionRE.MatchString(c.KubernetesVersion) {
		k.add("kubernetesVersion", "%q is not a Kubernetes version such as %q", c.KubernetesVersion, DefaultKubernetesVersion)
	}

	vip, vipOK := k.addr("controlPlaneEndpoint.vip", c.ControlPlaneEndpoint.VIP)
	k.port("controlPlaneEndpoint.port", c.ControlPlaneEndpoint.Port)
	k.port("controlPlaneEndpoint.apiServerPort", c.ControlPlaneEndpoint.APIServerPort)
	if c.ControlPlaneEndpoint.Port == c.ControlPlaneEndpoint.APIServerPort {
		k.add("controlPlaneEndpoint.port", "must differ from apiServerPort (%d): the load balancer and kube-apiserver run on the same hosts", c.ControlPlaneEndpoint.APIServerPort)
	}
	if dn := c.ControlPlaneEndpoint.DNSName; dn != "" && (!dnsRE.MatchString(dn) || len(dn) > 253) {
		k.add("controlPlaneEndpoint.dnsName", "%q is not a valid lower-case DNS name", dn)
	}

	c.validateVIP(k, vip, vipOK)
	c.validateLB(k)
	// One name set and one address set for every host of the cluster: an
	// external etcd host that shares a control-plane node's name would get
	// the same certificate folder, one that shares its address the same
	// SANs and ports.
	hosts := hostSets{names: map[string]string{}, addrs: map[netip.Addr]string{}}
	c.validateNodes(k, vip, vipOK, hosts)
	c.validateEtcd(k, vip, vipOK, hosts)
	c.validateNetworking(k, vip, vipOK)
	c.validateCertificates(k)
	return k.errs
}

func (c *Cluster) validateVIP(k *checker, vip netip.Addr, vipOK bool) {
	v := c.VIP
	switch v.Mode {
	case VIPModeVRRP:
		if v.BGP != nil {
			k.add("vip.bgp", "only used with mode: bgp")
		}
		c.validateVRRP(k, vip, vipOK)
	case VIPModeBGP:
		if v.BGP == nil {
			k.add("vip.bgp", "required with mode: bgp (localASN and peers)")
			return
		}
		c.validateBGP(k, vip, vipOK)
	default:
		k.add("vip.mode", "%q is not one of %s, %s", v.Mode, VIPModeVRRP, VIPModeBGP)
	}
}

func (c *Cluster) validateVRRP(k *checker, vip netip.Addr, vipOK bool) {
	v := c.VIP
	if v.Interface == "" {
		for i, n := range c.Nodes {
			if n.Interface == "" {
				k.add(fmt.Sprintf("nodes[%d].interface", i), "no interface: set vip.interface, or interface on every node")
			}
		}
	} else {
		k.ifname("vip.interface", v.Interface)
	}
	if v.VirtualRouterID < 1 || v.VirtualRouterID > 255 {
		k.add("vip.virtualRouterID", "%d is out of range 1..255 (and must be unique on the link)", v.VirtualRouterID)
	}
	ai := v.AdvertInterval.Duration
	switch v.Version {
	case 2:
		// RFC 3768 §5.3.7: the interval is a whole number of seconds.
		if ai < time.Second || ai > 255*time.Second || ai%time.Second != 0 {
			k.add("vip.advertInterval", "%s: VRRP version 2 needs whole seconds from 1s to 255s", ai)
		}
		if vipOK && vip.Is6() {
			k.add("vip.version", "VRRP version 2 carries IPv4 only; use version 3 for an IPv6 VIP")
		}
	case 3:
		// RFC 5798 §5.2.7: 12 bits of centiseconds.
		if ai < 10*time.Millisecond || ai > 4095*10*time.Millisecond || ai%(10*time.Millisecond) != 0 {
			k.add("vip.advertInterval", "%s: VRRP version 3 needs a multiple of 10ms from 10ms to 40.95s", ai)
		}
	default:
		k.add("vip.version", "%d is not a VRRP version; use 2 or 3", v.Version)
	}
	if v.PreemptDelay.Duration < 0 || v.PreemptDelay.Duration > 1000*time.Second {
		k.add("vip.preemptDelay", "%s is out of range 0s..1000s", v.PreemptDelay.Duration)
	}
	if lt := v.AddressLifetime.Duration; lt < time.Second || lt > MaxAddressLifetime || lt%time.Second != 0 {
		// The kernel counts address lifetimes in whole seconds.
		k.add("vip.addressLifetime", "%s: needs whole seconds from 1s to %s (the kernel counts address lifetimes in seconds)", lt, MaxAddressLifetime)
	}
	if v.Auth != nil {
		if v.Version != 2 {
			k.add("vip.auth", "authentication exists only in VRRP version 2 (RFC 5798 removed it); remove it or set version: 2")
		}
		if v.Auth.Type != "pass" {
			k.add("vip.auth.type", "%q is not supported; use \"pass\" (keepalived's auth_type PASS)", v.Auth.Type)
		}
		if n := len(v.Auth.Password); n == 0 || n > 8 {
			k.add("vip.auth.password", "must be 1 to 8 bytes (VRRPv2 carries 8), got %d", n)
		}
	}
}

func (c *Cluster) validateBGP(k *checker, vip netip.Addr, vipOK bool) {
	b := c.VIP.BGP
	if b.LocalASN == 0 {
		k.add("vip.bgp.localASN", "required: an AS number 1..4294967295")
	}
	if b.RouterID != "" {
		if a, err := netip.ParseAddr(b.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
			k.add("vip.bgp.routerID", "%q is not a non-zero IPv4 address (the BGP identifier is 32 bits)", b.RouterID)
		}
	} else {
		for i, n := range c.Nodes {
			if a, err := netip.ParseAddr(n.Address); err == nil && !a.Is4() {
				k.add(fmt.Sprintf("nodes[%d].address", i), "%s is IPv6: the BGP identifier defaults to the node's address and must be IPv4; set vip.bgp.routerID", a)
			}
		}
	}
	if len(b.Peers) == 0 {
		k.add("vip.bgp.peers", "at least one BGP peer is required")
	}
	seen := map[netip.Addr]int{}
	for i, p := range b.Peers {
		path := fmt.Sprintf("vip.bgp.peers[%d]", i)
		if a, ok := k.addr(path+".address", p.Address); ok {
			if j, dup := seen[a]; dup {
				k.add(path+".address", "%s is also vip.bgp.peers[%d]", a, j)
			} else {
				seen[a] = i
			}
			if vipOK && a == vip {
				k.add(path+".address", "%s is the VIP", a)
			}
			for j, n := range c.Nodes {
				if n.Address == p.Address {
					k.add(path+".address", "%s is nodes[%d]'s address; peers are the routers", a, j)
				}
			}
		}
		if p.ASN == 0 {
			k.add(path+".asn", "required: an AS number 1..4294967295")
		}
		if len(p.Password) > 80 {
			// RFC 2385 keys: the kernel takes at most 80 bytes.
			k.add(path+".password", "is %d bytes; TCP MD5 keys are at most 80", len(p.Password))
		}
		k.port(path+".port", p.Port)
	}
	ht, ka := b.HoldTime.Duration, b.KeepaliveInterval.Duration
	// RFC 4271 §4.2: the hold time is whole seconds, zero or at least 3.
	if ht%time.Second != 0 || ht < 3*time.Second || ht > 65535*time.Second {
		k.add("vip.bgp.holdTime", "%s: needs whole seconds from 3s to 65535s (RFC 4271)", ht)
	}
	if ka%time.Second != 0 || ka < time.Second {
		k.add("vip.bgp.keepaliveInterval", "%s: needs whole seconds, at least 1s", ka)
	} else if ka >= ht {
		k.add("vip.bgp.keepaliveInterval", "%s must be below the hold time (%s), or the peer drops the session", ka, ht)
	}
	for i, cm := range b.Communities {
		if _, err := ParseCommunity(cm); err != nil {
			k.add(fmt.Sprintf("vip.bgp.communities[%d]", i), "%v", err)
		}
	}
}

// ParseCommunity reads a standard BGP community "ASN:value" (RFC 1997) into
// its 32-bit form.
func ParseCommunity(s string) (uint32, error) {
	hi, lo, ok := strings.Cut(s, ":")
	if ok {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 == nil && err2 == nil {
			return uint32(h)<<16 | uint32(l), nil
		}
	}
	return 0, fmt.Errorf("%q is not a community ASN:value with both 0..65535", s)
}

// MaxLBLoops bounds loadBalancer.loops: each loop is a thread and an
// epoll set, and more loops than CPUs only add wake-ups.
const MaxLBLoops = 256

func (c *Cluster) validateLB(k *checker) {
	lb := c.LoadBalancer
	switch lb.Algorithm {
	case "roundrobin", "leastconn":
	default:
		k.add("loadBalancer.algorithm", "%q is not one of roundrobin, leastconn", lb.Algorithm)
	}
	k.positive("loadBalancer.connectTimeout", lb.ConnectTimeout)
	k.positive("loadBalancer.handshakeTimeout", lb.HandshakeTimeout)
	if lb.Drain.Duration < 0 {
		k.add("loadBalancer.drain", "must not be negative")
	}
	if lb.Loops < 0 || lb.Loops > MaxLBLoops {
		k.add("loadBalancer.loops", "%d is out of range 0..%d (0: one per CPU)", lb.Loops, MaxLBLoops)
	}
	hc := lb.HealthCheck
	if !strings.HasPrefix(hc.Path, "/") {
		k.add("loadBalancer.healthCheck.path", "%q must start with '/'", hc.Path)
	}
	if hc.LivenessPath != "none" && !strings.HasPrefix(hc.LivenessPath, "/") {
		k.add("loadBalancer.healthCheck.livenessPath", "%q must start with '/' (or be none)", hc.LivenessPath)
	}
	k.positive("loadBalancer.healthCheck.interval", hc.Interval)
	k.positive("loadBalancer.healthCheck.timeout", hc.Timeout)
	if hc.Fall < 1 || hc.Fall > 100 {
		k.add("loadBalancer.healthCheck.fall", "%d is out of range 1..100", hc.Fall)
	}
	if hc.Rise < 1 || hc.Rise > 100 {
		k.add("loadBalancer.healthCheck.rise", "%d is out of range 1..100", hc.Rise)
	}
	nl := lb.NodeLocal
	if ap, err := netip.ParseAddrPort(nl.Listen); err != nil {
		k.add("loadBalancer.nodeLocal.listen", "%q is not an address:port (e.g. 127.0.0.1:6443): %v", nl.Listen, err)
	} else if ap.Port() == 0 {
		k.add("loadBalancer.nodeLocal.listen", "%q needs a port", nl.Listen)
	}
	switch nl.Discovery {
	case DiscoveryEndpointSlice, DiscoveryNone:
	default:
		k.add("loadBalancer.nodeLocal.discovery", "%q is not one of %s, %s", nl.Discovery, DiscoveryEndpointSlice, DiscoveryNone)
	}
}

// hostSets records each host name and address already taken, with the field
// path that took it ("nodes[0]", "etcd.nodes[2]").
type hostSets struct {
	names map[string]string
	addrs map[netip.Addr]string
}

// name reports a name already taken, or takes it for path.
func (h hostSets) name(k *checker, path, name string) {
	if other, dup := h.names[name]; dup {
		k.add(path+".name", "%q is already used by %s", name, other)
	} else {
		h.names[name] = path
	}
}

// addr reports an address already taken, or takes it for path.
func (h hostSets) addr(k *checker, path string, a netip.Addr) {
	if other, dup := h.addrs[a]; dup {
		k.add(path+".address", "%s is already used by %s", a, other)
	} else {
		h.addrs[a] = path
	}
}

// hostName checks the name of the host at p (a node or an etcd host):
// required, a lower-case DNS name (why says what else it becomes), and
// not another host's.
func (h hostSets) hostName(k *checker, p, name, why string) {
	switch {
	case name == "":
		k.add(p+".name", "required")
	case !dnsRE.MatchString(name) || len(name) > 253:
		k.add(p+".name", "%q must be a lower-case DNS name"+why, name)
	default:
		h.name(k, p, name)
	}
}

func (c *Cluster) validateNodes(k *checker, vip netip.Addr, vipOK bool, hosts hostSets) {
	if len(c.Nodes) == 0 {
		k.add("nodes", "at least one control-plane node is required (three for high availability)")
		return
	}
	prios := map[int]int{}
	setCount := 0
	for i, n := range c.Nodes {
		p := fmt.Sprintf("nodes[%d]", i)
		hosts.hostName(k, p, n.Name, " (it becomes the Kubernetes node name)")
		if a, ok := k.addr(p+".address", n.Address); ok {
			switch {
			case vipOK && a == vip:
				k.add(p+".address", "%s is the VIP; a node needs its own address", a)
			case vipOK && a.Is4() != vip.Is4():
				k.add(p+".address", "%s and the VIP %s are of different IP families", a, vip)
			default:
				hosts.addr(k, p, a)
			}
		}
		if n.Interface != "" {
			k.ifname(p+".interface", n.Interface)
		}
		if n.Priority != 0 {
			setCount++
			if n.Priority < 1 || n.Priority > 254 {
				k.add(p+".priority", "%d is out of range 1..254 (255 is reserved for the address owner)", n.Priority)
			} else if j, dup := prios[n.Priority]; dup {
				k.add(p+".priority", "%d is also nodes[%d]'s priority; equal priorities cause dual masters after a partition, give each node its own", n.Priority, j)
			} else {
				prios[n.Priority] = i
			}
		}
	}
	if setCount != 0 && setCount != len(c.Nodes) {
		for i, n := range c.Nodes {
			if n.Priority == 0 {
				k.add(fmt.Sprintf("nodes[%d].priority", i), "set a priority on every node or on none (haplane then assigns %d, %d, ...)", DefaultBasePriority, DefaultBasePriority-1)
			}
		}
	}
}

func (c *Cluster) validateEtcd(k *checker, vip netip.Addr, vipOK bool, hosts hostSets) {
	e := c.Etcd
	k.port("etcd.clientPort", e.ClientPort)
	k.port("etcd.peerPort", e.PeerPort)
	if e.ClientPort == e.PeerPort {
		k.add("etcd.peerPort", "must differ from clientPort (%d)", e.ClientPort)
	}
	for _, p := range []int{e.ClientPort, e.PeerPort} {
		if p == c.ControlPlaneEndpoint.Port || p == c.ControlPlaneEndpoint.APIServerPort {
			k.add("etcd", "port %d is also used by the control-plane endpoint", p)
		}
	}
	if !path.IsAbs(e.DataDir) {
		k.add("etcd.dataDir", "%q must be an absolute path", e.DataDir)
	}
	switch {
	case e.RunBy != EtcdRunByAgent && e.RunBy != EtcdRunByKubelet:
		k.add("etcd.runBy", "%q is not one of agent, kubelet", e.RunBy)
	case e.RunBy == EtcdRunByKubelet && e.Topology != TopologyStacked:
		k.add("etcd.runBy", "kubelet runs stacked members (kubeadm's etcd static pods); external etcd hosts run the haplane agent")
	}
	switch e.Topology {
	case TopologyStacked:
		if len(e.Nodes) > 0 {
			k.add("etcd.nodes", "only used with topology: external; stacked members run on the control-plane nodes")
		}
	case TopologyExternal:
		if len(e.Nodes) == 0 {
			k.add("etcd.nodes", "topology external needs its etcd hosts (three for high availability)")
		}
		// External etcd hosts are machines of their own: their names and
		// addresses are checked against the control-plane nodes' too.
		for i, n := range e.Nodes {
			p := fmt.Sprintf("etcd.nodes[%d]", i)
			hosts.hostName(k, p, n.Name, "")
			if a, ok := k.addr(p+".address", n.Address); ok {
				switch {
				case vipOK && a == vip:
					k.add(p+".address", "%s is the VIP; an etcd host needs its own address", a)
				default:
					hosts.addr(k, p, a)
				}
			}
		}
	default:
		k.add("etcd.topology", "%q is not one of stacked, external", e.Topology)
	}
}

func (c *Cluster) validateNetworking(k *checker, vip netip.Addr, vipOK bool) {
	nw := c.Networking
	svc, err := netip.ParsePrefix(nw.ServiceSubnet)
	svcOK := err == nil && svc == svc.Masked()
	switch {
	case err != nil:
		k.add("networking.serviceSubnet", "%q is not a CIDR such as %s", nw.ServiceSubnet, DefaultServiceSubnet)
	case !svcOK:
		k.add("networking.serviceSubnet", "%q has host bits set; did you mean %s?", nw.ServiceSubnet, svc.Masked())
	case svc.Addr().Is4() && svc.Bits() > 30, svc.Addr().Is6() && svc.Bits() > 126:
		k.add("networking.serviceSubnet", "%s is too small for services", svc)
		svcOK = false
	}
	if svcOK {
		if vipOK && svc.Contains(vip) {
			k.add("controlPlaneEndpoint.vip", "%s lies inside the service subnet %s", vip, svc)
		}
		for i, n := range c.Nodes {
			if a, err := netip.ParseAddr(n.Address); err == nil && svc.Contains(a) {
				k.add(fmt.Sprintf("nodes[%d].address", i), "%s lies inside the service subnet %s", a, svc)
			}
		}
	}
	if nw.PodSubnet != "" {
		pod, err := netip.ParsePrefix(nw.PodSubnet)
		switch {
		case err != nil:
			k.add("networking.podSubnet", "%q is not a CIDR such as 10.244.0.0/16", nw.PodSubnet)
		case pod != pod.Masked():
			k.add("networking.podSubnet", "%q has host bits set; did you mean %s?", nw.PodSubnet, pod.Masked())
		case svcOK && pod.Overlaps(svc):
			k.add("networking.podSubnet", "%s overlaps the service subnet %s", pod, svc)
		}
	}
	if !dnsRE.MatchString(nw.DNSDomain) {
		k.add("networking.dnsDomain", "%q is not a valid lower-case DNS domain", nw.DNSDomain)
	}
}

func (c *Cluster) validateCertificates(k *checker) {
	ct := c.Certificates
	if !path.IsAbs(ct.Dir) {
		k.add("certificates.dir", "%q must be an absolute path", ct.Dir)
	}
	k.positive("certificates.validity", ct.Validity)
	k.positive("certificates.caValidity", ct.CAValidity)
	if ct.CAValidity.Duration > 0 && ct.Validity.Duration > ct.CAValidity.Duration {
		k.add("certificates.validity", "%s outlives the CAs (caValidity %s)", ct.Validity.Duration, ct.CAValidity.Duration)
	}
	if ct.RenewBefore.Duration < 0 || (ct.Validity.Duration > 0 && ct.RenewBefore.Duration >= ct.Validity.Duration) {
		k.add("certificates.renewBefore", "%s must be between 0 and the validity (%s), or every run re-issues", ct.RenewBefore.Duration, ct.Validity.Duration)
	}
	k.positive("certificates.renewCheckInterval", ct.RenewCheckInterval)
	if ct.RenewCheckInterval.Duration > 0 && ct.RenewBefore.Duration > 0 && ct.RenewCheckInterval.Duration > ct.RenewBefore.Duration/2 {
		k.add("certificates.renewCheckInterval", "%s is more than half of renewBefore (%s): a leaf could expire between two checks", ct.RenewCheckInterval.Duration, ct.RenewBefore.Duration)
	}
	switch ct.KeyAlgorithm {
	case KeyRSA2048, KeyECDSAP256:
	default:
		k.add("certificates.keyAlgorithm", "%q is not one of %s, %s", ct.KeyAlgorithm, KeyRSA2048, KeyECDSAP256)
	}
}
