package render

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/haplane/haplane/internal/config"
)

// ControlPlaneDirs says where a host keeps the files the control-plane
// components read: kubeadm's /etc/kubernetes layout by default.
type ControlPlaneDirs struct {
	// PKI is the certificates folder (default /etc/kubernetes/pki).
	PKI string
	// Kubeconfigs holds controller-manager.conf and scheduler.conf
	// (default /etc/kubernetes).
	Kubeconfigs string
}

func (d ControlPlaneDirs) withDefaults() ControlPlaneDirs {
	if d.PKI == "" {
		d.PKI = config.DefaultCertificatesDir
	}
	if d.Kubeconfigs == "" {
		d.Kubeconfigs = filepath.Dir(d.PKI)
	}
	return d
}

// ControlPlaneArgs are the command lines of a node's kube-apiserver,
// kube-controller-manager and kube-scheduler, with the flags kubeadm v1.37
// writes into their static pod manifests (the scheduler and the
// controller-manager elect a leader on a Lease, as in the HA guide).
type ControlPlaneArgs struct {
	APIServer         []string
	ControllerManager []string
	Scheduler         []string
}

// ControlPlane returns the control-plane command lines (flags only, without
// the binary) of a control-plane node.
func ControlPlane(c *config.Cluster, node string, dirs ControlPlaneDirs) (ControlPlaneArgs, error) {
	n, ok := c.NodeByName(node)
	if !ok {
		return ControlPlaneArgs{}, fmt.Errorf("render: %q is not a control-plane node", node)
	}
	dirs = dirs.withDefaults()
	pki := func(name string) string { return filepath.Join(dirs.PKI, name) }
	kc := func(name string) string { return filepath.Join(dirs.Kubeconfigs, name) }

	// Stacked: the apiserver talks to its own member, as kubeadm's
	// (127.0.0.1 there; the node address here, which the member serves and
	// its certificate names). External: every member.
	var etcd []string
	if c.Etcd.Topology == config.TopologyExternal {
		for _, m := range c.EtcdMembers() {
			etcd = append(etcd, etcdURL(m.Address, c.Etcd.ClientPort))
		}
	} else {
		etcd = []string{etcdURL(n.Address, c.Etcd.ClientPort)}
	}
	dns := c.Networking.DNSDomain
	api := []string{
		"--advertise-address=" + n.Address,
		"--allow-privileged=true",
		"--authorization-mode=Node,RBAC",
		"--client-ca-file=" + pki("ca.crt"),
		"--enable-admission-plugins=NodeRestriction",
		"--enable-bootstrap-token-auth=true",
		"--etcd-cafile=" + pki("etcd/ca.crt"),
		"--etcd-certfile=" + pki("apiserver-etcd-client.crt"),
		"--etcd-keyfile=" + pki("apiserver-etcd-client.key"),
		"--etcd-servers=" + strings.Join(etcd, ","),
		"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
		"--proxy-client-cert-file=" + pki("front-proxy-client.crt"),
		"--proxy-client-key-file=" + pki("front-proxy-client.key"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-client-ca-file=" + pki("front-proxy-ca.crt"),
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--secure-port=" + strconv.Itoa(c.ControlPlaneEndpoint.APIServerPort),
		"--service-account-issuer=https://kubernetes.default.svc." + dns,
		"--service-account-key-file=" + pki("sa.pub"),
		"--service-account-signing-key-file=" + pki("sa.key"),
		"--service-cluster-ip-range=" + c.Networking.ServiceSubnet,
		"--tls-cert-file=" + pki("apiserver.crt"),
		"--tls-private-key-file=" + pki("apiserver.key"),
	}
	cm := []string{
		"--authentication-kubeconfig=" + kc("controller-manager.conf"),
		"--authorization-kubeconfig=" + kc("controller-manager.conf"),
		"--bind-address=127.0.0.1",
		"--client-ca-file=" + pki("ca.crt"),
		"--cluster-name=" + c.Name,
		"--cluster-signing-cert-file=" + pki("ca.crt"),
		"--cluster-signing-key-file=" + pki("ca.key"),
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--kubeconfig=" + kc("controller-manager.conf"),
		"--leader-elect=true",
		"--requestheader-client-ca-file=" + pki("front-proxy-ca.crt"),
		"--root-ca-file=" + pki("ca.crt"),
		"--service-account-private-key-file=" + pki("sa.key"),
		"--use-service-account-credentials=true",
	}
	if c.Networking.PodSubnet != "" {
		cm = append(cm, "--allocate-node-cidrs=true", "--cluster-cidr="+c.Networking.PodSubnet)
	}
	if _, err := netip.ParsePrefix(c.Networking.ServiceSubnet); err == nil {
		cm = append(cm, "--service-cluster-ip-range="+c.Networking.ServiceSubnet)
	}
	sched := []string{
		"--authentication-kubeconfig=" + kc("scheduler.conf"),
		"--authorization-kubeconfig=" + kc("scheduler.conf"),
		"--bind-address=127.0.0.1",
		"--kubeconfig=" + kc("scheduler.conf"),
		"--leader-elect=true",
	}
	return ControlPlaneArgs{APIServer: api, ControllerManager: cm, Scheduler: sched}, nil
}
