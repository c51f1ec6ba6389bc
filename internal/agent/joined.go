package agent

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
	"github.com/haplane/haplane/internal/render"
)

// JoinFiles lays out what a join returned for node, relative to the
// folder it is installed in (/etc/kubernetes): the PKI, the kubeconfigs
// and kubeadm's files, with keys the private keys of the certificates.
func JoinFiles(res *join.Result, node string, keys map[string]crypto.Signer) (map[string]pki.File, *config.Cluster, error) {
	c, err := config.Parse("the server's cluster file", res.ClusterFile)
	if err != nil {
		return nil, nil, err
	}
	plan := PKIPlan(c)
	files := map[string]pki.File{}
	for name, data := range res.CACerts {
		files[filepath.Join("pki", name)] = pki.File{Data: data, Mode: 0o644}
	}
	for name, data := range res.SharedKeys {
		mode := os.FileMode(0o600)
		if strings.HasSuffix(name, ".crt") || strings.HasSuffix(name, ".pub") {
			mode = 0o644
		}
		files[filepath.Join("pki", name)] = pki.File{Data: data, Mode: mode}
	}
	if err := checkSharedPairs(res); err != nil {
		return nil, nil, err
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

// checkSharedPairs checks a certificate the server shared with its key (the
// apiserver's etcd client pair, external etcd) before anything is written:
// the key is the certificate's, and the certificate chains to a CA the
// server sent.
func checkSharedPairs(res *join.Result) error {
	pool := x509.NewCertPool()
	for _, data := range res.CACerts {
		pool.AppendCertsFromPEM(data)
	}
	for name, certPEM := range res.SharedKeys {
		base, ok := strings.CutSuffix(name, ".crt")
		if !ok {
			continue
		}
		kp, err := pki.ParseKeyPair(certPEM, res.SharedKeys[base+".key"])
		if err != nil {
			return fmt.Errorf("join: shared pair %s: %w", base, err)
		}
		if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("join: shared pair %s does not chain to the cluster CAs: %w", base, err)
		}
	}
	return nil
}

// InstallJoined writes the files into a temporary folder beside out and then
// moves them into place, pki/ in one rename, then the cluster file to
// configOut, so a failure leaves nothing. It returns the files written.
func InstallJoined(out, configOut string, files map[string]pki.File, clusterFile []byte) ([]string, error) {
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
		if pathExists(filepath.Join(out, n)) {
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

func pathExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
