package config

import (
	"bytes"
	"text/template"
)

// ExampleOptions shapes the file Example writes. Zero fields take the
// values of a three-node lab on 10.77.0.0/24.
type ExampleOptions struct {
	Name      string
	VIP       string
	Interface string
	Nodes     []Node
	// EtcdNodes, when set, selects the external topology.
	EtcdNodes []EtcdNode
	// EtcdRunBy, when set, is etcd.runBy (stacked).
	EtcdRunBy string
	// BGP, when set, selects vip.mode bgp with these ASNs and peers.
	BGP *BGP
}

// DefaultExampleNodes are the control-plane nodes of the example and the lab.
var defaultExampleNodes = []Node{
	{Name: "cp1", Address: "10.77.0.11"},
	{Name: "cp2", Address: "10.77.0.12"},
	{Name: "cp3", Address: "10.77.0.13"},
}

func (o ExampleOptions) withDefaults() ExampleOptions {
	if o.Name == "" {
		o.Name = "lab"
	}
	if o.VIP == "" {
		o.VIP = "10.77.0.100"
	}
	if o.Interface == "" {
		o.Interface = "eth0"
	}
	if len(o.Nodes) == 0 {
		o.Nodes = defaultExampleNodes
	}
	return o
}

var exampleTmpl = template.Must(template.New("haplane.yaml").Parse(`# haplane cluster file. Every field is documented; commented-out lines show
# defaults. Check it with: haplane validate --config haplane.yaml
apiVersion: {{.APIVersion}}
kind: {{.Kind}}

# Names the cluster (kubeconfig entries, etcd cluster token).
name: {{.O.Name}}
kubernetesVersion: {{.K8s}}

# Where every client reaches the API: the virtual IP, and the load
# balancer's port on it. Each kube-apiserver listens on apiServerPort.
controlPlaneEndpoint:
  vip: {{.O.VIP}}
  port: {{.FrontendPort}}
  apiServerPort: {{.APIServerPort}}
  # dnsName: api.example.internal   # optional; added to the apiserver cert

# How the VIP is held: the VRRP speaker (default; keepalived-compatible on
# the wire), or BGP announcements from every healthy node (mode: bgp).
vip:
{{- if .O.BGP}}
  mode: bgp
  bgp:
    localASN: {{.O.BGP.LocalASN}}
    peers:
{{- range .O.BGP.Peers}}
      - {address: {{.Address}}, asn: {{.ASN}}{{if .BFD}}, bfd: true{{end}}}
{{- end}}
{{- end}}
  interface: {{.O.Interface}}   # link the VIP lives on; a node may override it
  virtualRouterID: 51           # 1..255, unique on the link
  version: 3                    # 3 (RFC 5798) or 2 (RFC 3768, keepalived's default)
  advertInterval: 100ms         # v3: multiple of 10ms; v2: whole seconds
  # preempt: true               # a higher-priority node takes the VIP back
  # preemptDelay: 0s
  # unicast: false              # true sends adverts to the other nodes' addresses
  # auth: {type: pass, password: "secret12"}   # version 2 only
  # addressLifetime: 1s         # whole seconds; the master renews the VIP 4x per
  #                             # lifetime, so a killed agent's copy expires in ~1.5s
  # mode: vrrp                  # or bgp: every healthy node announces the VIP /32
  #                             # to its routers (ECMP); the VRRP fields are then unused
  # bgp:                        # with mode: bgp only
  #   localASN: 64512
  #   # routerID: 10.77.0.11    # default: each node's (IPv4) address
  #   peers:
  #     - {address: 10.77.0.1, asn: 64513}   # optional: password (TCP MD5), port (179), bfd (true: ~500ms detection)
  #   holdTime: 3s              # whole seconds, at least 3s
  #   keepaliveInterval: 1s
  #   communities: ["64512:100"]

# The L4 load balancer on the VIP, in front of every kube-apiserver.
loadBalancer:
  algorithm: roundrobin         # or leastconn
  connectTimeout: 500ms         # then the client is retried on another apiserver
  # handshakeTimeout: 1s        # no TLS answer by then: the client moves to another
  # drain: 0s                   # close sessions to a down apiserver after this
  # loops: 0                    # event loops (threads) running the sessions; 0: one per CPU
  healthCheck:
    path: /readyz               # HTTPS GET, verified against the cluster CA
    livenessPath: /livez?exclude=etcd  # when no apiserver is ready, send to those that answer this (panic routing; none: off)
    interval: 200ms
    timeout: 1s
    fall: 2                     # failures before an apiserver leaves the pool
    rise: 2                     # successes before it returns
  # nodeLocal:                  # haplane agent --role worker, on every worker
  #   listen: 127.0.0.1:6443    # its kubelet and kube-proxy point here
  #   discovery: endpointslice  # follow the kubernetes Service's endpoints (or none)
  #   kubeconfig: /etc/kubernetes/kubelet.conf

# Control-plane hosts. Priorities default to 250, 249, ... in this order:
# the first node normally holds the VIP.
nodes:
{{- range .O.Nodes}}
  - name: {{.Name}}
    address: {{.Address}}
{{- if .Priority}}
    priority: {{.Priority}}
{{- end}}
{{- if .Interface}}
    interface: {{.Interface}}
{{- end}}
{{- end}}

etcd:
{{- if .O.EtcdNodes}}
  topology: external            # members on their own hosts
  nodes:
{{- range .O.EtcdNodes}}
    - name: {{.Name}}
      address: {{.Address}}
{{- end}}
{{- else}}
  topology: stacked             # a member on every control-plane node; or external
{{- if .O.EtcdRunBy}}
  runBy: {{.O.EtcdRunBy}}
{{- else}}
  # runBy: agent                # who runs stacked members: agent (haplane), or kubelet (kubeadm's etcd static pods)
{{- end}}
{{- end}}
  # clientPort: 2379
  # peerPort: 2380
  # dataDir: /var/lib/etcd

networking:
  serviceSubnet: 10.96.0.0/12
  # podSubnet: 10.244.0.0/16
  dnsDomain: cluster.local

certificates:
  # dir: /etc/kubernetes/pki
  validity: 8760h               # leaf certificates, as kubeadm
  caValidity: 87600h            # CAs, as kubeadm
  renewBefore: 720h             # re-issue leaves expiring within this window
  keyAlgorithm: rsa2048         # or ecdsa-p256
  renewCheckInterval: 1h        # how often each agent renews leaves within renewBefore
`))

// Example returns a commented cluster file that validates.
func Example(o ExampleOptions) []byte {
	var b bytes.Buffer
	err := exampleTmpl.Execute(&b, map[string]any{
		"APIVersion":    APIVersion,
		"Kind":          Kind,
		"K8s":           DefaultKubernetesVersion,
		"FrontendPort":  DefaultFrontendPort,
		"APIServerPort": DefaultAPIServerPort,
		"O":             o.withDefaults(),
	})
	if err != nil {
		panic("config: example template: " + err.Error()) // the template is fixed; tests cover it
	}
	return b.Bytes()
}
