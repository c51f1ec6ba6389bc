package cli

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
)

// joinCertNames are the certificates a control-plane node may need; the
// server signs those the cluster file gives this node.
var joinCertNames = []string{
	"apiserver", "apiserver-kubelet-client", "front-proxy-client", "apiserver-etcd-client",
	"etcd/server", "etcd/peer", "etcd/healthcheck-client",
	"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf",
}

type joinResult struct {
	Node        string   `json:"node"`
	Cluster     string   `json:"cluster"`
	Out         string   `json:"out"`
	ClusterFile string   `json:"clusterFile"`
	Files       []string `json:"files"`
}

func (a *app) joinCmd() *cobra.Command {
	var server, token, caHash, node, out, configOut, keyAlg string
	cmd := &cobra.Command{
		Use:   "join",
		Short: "Join this host to the cluster as a control-plane node, without copying keys by hand",
		Long: `join brings a new control-plane host in. It pins the cluster CA by the hash of
its public key before it sends anything, proves a single-use token (from
'haplane token create'), makes its own private keys and sends only CSRs, and
receives its certificates and the cluster's shared keys (CA, front-proxy and
service-account keys) sealed to a key it made for this join alone. It then
writes OUT/pki (the layout of 'haplane pki generate'), its kubeconfigs, its
kubeadm configuration and the cluster file. On any failure it writes nothing.
Add the node to the cluster file on the control-plane nodes first.`,
		Example: `  haplane join --server 10.77.0.100:9445 --token abcdef.0123456789abcdef \
    --ca-hash sha256:0123... --node cp4`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, f := range []struct{ name, v string }{{"server", server}, {"token", token}, {"ca-hash", caHash}, {"node", node}} {
				if err := requireFlag(f.name, f.v); err != nil {
					return err
				}
			}
			if exists(filepath.Join(out, "pki")) {
				return usageError{fmt.Errorf("%s already exists: this host has a PKI; move it away to join afresh", filepath.Join(out, "pki"))}
			}
			// Keys are made here and never leave this host.
			keys := map[string]crypto.Signer{}
			csrs := map[string]*x509.CertificateRequest{}
			for _, name := range joinCertNames {
				k, err := pki.NewKey(keyAlg)
				if err != nil {
					return usageError{err}
				}
				der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}}, k)
				if err != nil {
					return err
				}
				csr, err := x509.ParseCertificateRequest(der)
				if err != nil {
					return err
				}
				keys[name], csrs[name] = k, csr
			}
			res, err := join.Join(cmd.Context(), join.ClientOptions{Server: server, Token: token, CAHash: caHash, Node: node, CSRs: csrs})
			if err != nil {
				a.logger().Error("join failed; nothing written", "err", err)
				return &ExitError{Code: ExitFailure, Err: err}
			}
			files, c, err := agent.JoinFiles(res, node, keys)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("join: %w; nothing written", err)}
			}
			written, err := agent.InstallJoined(out, configOut, files, res.ClusterFile)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			r := joinResult{Node: node, Cluster: c.Name, Out: out, ClusterFile: configOut, Files: written}
			a.logger().Info("joined", "node", node, "cluster", c.Name, "files", len(written))
			return a.print(r, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s joined cluster %s: %d files in %s, cluster file %s\nnext: haplane agent --config %s --node %s; kubeadm join --config %s\n",
					node, c.Name, len(written), out, configOut, configOut, node, filepath.Join(out, "kubeadm.yaml"))
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "a join server: the VIP and port 9445 (from the join command)")
	f.StringVar(&token, "token", "", "single-use join token")
	f.StringVar(&caHash, "ca-hash", "", "sha256:<hex> pin of the cluster CA's public key")
	f.StringVar(&node, "node", "", "this host's name in the cluster file")
	f.StringVar(&out, "out", "/etc/kubernetes", "where to write pki/, the kubeconfigs and kubeadm.yaml")
	f.StringVar(&configOut, "config-out", "/etc/haplane/haplane.yaml", "where to write the cluster file")
	f.StringVar(&keyAlg, "key-algorithm", pki.RSA2048, "private keys to make: rsa2048 or ecdsa-p256")
	return cmd
}
