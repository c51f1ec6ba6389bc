package cli

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
	"github.com/haplane/haplane/internal/render"
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
			files, c, err := joinFiles(res, node, keys)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("join: %w; nothing written", err)}
			}
			written, err := writeJoined(out, configOut, files, res.ClusterFile)
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

// joinFiles lays out what a join returned, relative to OUT.
func joinFiles(res *join.Result, node string, keys map[string]crypto.Signer) (map[string]pki.File, *config.Cluster, error) {
	c, err := config.Parse("the server's cluster file", res.ClusterFile)
	if err != nil {
		return nil, nil, err
	}
	plan := pkiPlan(c)
	files := map[string]pki.File{}
	for name, data := range res.CACerts {
		files[filepath.Join("pki", name)] = pki.File{Data: data, Mode: 0o644}
	}
	for name, data := range res.SharedKeys {
		files[filepath.Join("pki", name)] = pki.File{Data: data, Mode: 0o600}
	}
	kubeconfigs := map[string]pki.KubeconfigSpec{}
	for _, kc := range plan.Kubeconfigs(node) {
		kubeconfigs[kc.File] = kc
	}
	for name, certPEM := range res.Certs {
		keyPEM, err := pki.KeyPEM(keys[name])
		if err != nil {
			return nil, nil, err
		}
		if kc, ok := kubeconfigs[name]; ok {
			cert, err := pki.ParseCertPEM(certPEM)
			if err != nil {
				return nil, nil, err
			}
			data, err := pki.KubeconfigYAML(c.Name, kc, res.CACerts["ca.crt"], cert, keys[name])
			if err != nil {
				return nil, nil, err
			}
			files[name] = pki.File{Data: data, Mode: 0o600}
			continue
		}
		files[filepath.Join("pki", name+".crt")] = pki.File{Data: certPEM, Mode: 0o644}
		files[filepath.Join("pki", name+".key")] = pki.File{Data: keyPEM, Mode: 0o600}
	}
	kfiles, err := render.Kubeadm(c)
	if err != nil {
		return nil, nil, err
	}
	for _, kf := range kfiles {
		if kf.Host == node {
			files[kf.Name] = pki.File{Data: kf.Data, Mode: 0o644}
		}
	}
	return files, c, nil
}

// writeJoined writes the files into a temporary folder beside out and then
// moves them into place, pki/ in one rename, so a failure leaves nothing.
func writeJoined(out, configOut string, files map[string]pki.File, clusterFile []byte) ([]string, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(out, ".haplane-join-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if _, err := pki.WriteTree(tmp, files); err != nil {
		return nil, err
	}
	var moved []string
	undo := func() {
		for _, m := range moved {
			os.RemoveAll(filepath.Join(out, m))
		}
	}
	names := make([]string, 0, len(files))
	top := map[string]bool{}
	for p := range files {
		first, _, _ := strings.Cut(filepath.ToSlash(p), "/")
		if !top[first] {
			top[first] = true
			names = append(names, first)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		if exists(filepath.Join(out, n)) {
			undo()
			return nil, fmt.Errorf("join: %s exists; nothing written", filepath.Join(out, n))
		}
		if err := os.Rename(filepath.Join(tmp, n), filepath.Join(out, n)); err != nil {
			undo()
			return nil, fmt.Errorf("join: %w; nothing written", err)
		}
		moved = append(moved, n)
	}
	if err := os.MkdirAll(filepath.Dir(configOut), 0o755); err != nil {
		undo()
		return nil, err
	}
	if err := pki.WriteFileAtomic(configOut, clusterFile, 0o644); err != nil {
		undo()
		return nil, err
	}
	var written []string
	for p := range files {
		written = append(written, p)
	}
	sort.Strings(written)
	return written, nil
}
