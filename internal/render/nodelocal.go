package render

import (
	"fmt"
	"net/netip"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/haplane/haplane/internal/config"
)

// NodeLocalKubeconfig points a kubeconfig (a worker's kubelet.conf, or
// kube-proxy's) at the worker's node-local load balancer: every cluster's
// server becomes https://loadBalancer.nodeLocal.listen, and its
// tls-server-name the control-plane endpoint's host, so the apiservers'
// certificates verify as they do through the VIP (kubeadm puts no
// loopback address in them). Credentials and CA stay as they are.
func NodeLocalKubeconfig(c *config.Cluster, in []byte) ([]byte, error) {
	kc, err := clientcmd.Load(in)
	if err != nil {
		return nil, fmt.Errorf("render: node-local kubeconfig: %w", err)
	}
	if len(kc.Clusters) == 0 {
		return nil, fmt.Errorf("render: node-local kubeconfig: it names no cluster")
	}
	listen, err := netip.ParseAddrPort(c.LoadBalancer.NodeLocal.Listen)
	if err != nil {
		return nil, fmt.Errorf("render: node-local kubeconfig: loadBalancer.nodeLocal.listen: %w", err)
	}
	for _, cl := range kc.Clusters {
		cl.Server = "https://" + listen.String()
		cl.TLSServerName = c.EndpointHost()
	}
	out, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, fmt.Errorf("render: node-local kubeconfig: %w", err)
	}
	return out, nil
}
