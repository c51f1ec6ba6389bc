package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
)

// PKISigner signs a joining node's CSRs with the CA keys in a PKI folder,
// giving each certificate exactly the names the plan says that node has.
type PKISigner struct {
	// Plan returns the current plan (the cluster file is read at each
	// join, so adding the new node to it needs no restart).
	Plan   func() (*pki.Plan, error)
	PKIDir string
	Now    func() time.Time
}

// Sign implements join.Signer. A CSR may ask for nothing (the names come
// from the plan) or for a subset of the node's own names; any other name
// is refused. CSRs for certificates the node does not need are ignored.
func (s *PKISigner) Sign(node string, csrs map[string]*x509.CertificateRequest) (map[string][]byte, error) {
	plan, err := s.Plan()
	if err != nil {
		return nil, fmt.Errorf("cluster file: %w", err)
	}
	if _, ok := plan.Host(node); !ok {
		return nil, fmt.Errorf("node %q is not in the cluster file; add it there before it joins", node)
	}
	leaves, err := plan.Leaves(node)
	if err != nil {
		return nil, err
	}
	specs := map[string]pki.LeafSpec{}
	for _, l := range leaves {
		specs[l.Name] = l
	}
	for _, kc := range plan.Kubeconfigs(node) {
		specs[kc.File] = pki.LeafSpec{Name: kc.File, CA: pki.CA, CN: kc.User, Orgs: kc.Orgs, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	cas := map[string]pki.KeyPair{}
	out := map[string][]byte{}
	for name, csr := range csrs {
		spec, ok := specs[name]
		if !ok {
			continue
		}
		if err := asksOnlyFor(csr, node, spec); err != nil {
			return nil, fmt.Errorf("CSR %s: %w", name, err)
		}
		ca, ok := cas[spec.CA]
		if !ok {
			c, err := os.ReadFile(filepath.Join(s.PKIDir, spec.CA+".crt"))
			if err != nil {
				return nil, fmt.Errorf("this node cannot sign %s: %w", name, err)
			}
			k, err := os.ReadFile(filepath.Join(s.PKIDir, spec.CA+".key"))
			if err != nil {
				if sharedPair(s.PKIDir, name) {
					continue // PKISecrets serves this node's own pair instead
				}
				return nil, fmt.Errorf("this node holds no %s key to sign %s", spec.CA, name)
			}
			if ca, err = pki.ParseKeyPair(c, k); err != nil {
				return nil, fmt.Errorf("CA %s: %w", spec.CA, err)
			}
			cas[spec.CA] = ca
		}
		cert, err := pki.Sign(spec, csr.PublicKey, ca, now(), plan.LeafValidity())
		if err != nil {
			return nil, err
		}
		out[name] = pki.CertPEM(cert)
	}
	if len(out) == 0 {
		return nil, errors.New("no CSR names a certificate this node needs")
	}
	return out, nil
}

// asksOnlyFor refuses a CSR that asks for a name that is not node's.
func asksOnlyFor(csr *x509.CertificateRequest, node string, spec pki.LeafSpec) error {
	if cn := csr.Subject.CommonName; cn != "" && cn != node && cn != spec.CN {
		return fmt.Errorf("asks for the name %q, which is not %s's", cn, node)
	}
	for _, d := range csr.DNSNames {
		if !slices.Contains(spec.DNS, d) {
			return fmt.Errorf("asks for the DNS name %q, which is not %s's", d, node)
		}
	}
	for _, ip := range csr.IPAddresses {
		ok := false
		for _, a := range spec.IPs {
			ok = ok || net.IP(a.AsSlice()).Equal(ip)
		}
		if !ok {
			return fmt.Errorf("asks for the address %s, which is not %s's", ip, node)
		}
	}
	return nil
}

// PKIRenewer renews, with the CA keys in a PKI folder, a certificate a
// node proved it holds (join.RenewPath): only one this folder's CA signed,
// still valid, and carrying exactly the names the plan gives that node for
// that certificate, so the renewal gives the node nothing it did not have.
type PKIRenewer struct {
	Plan   func() (*pki.Plan, error)
	PKIDir string
	Now    func() time.Time
}

// Renew implements join.Renewer.
func (s *PKIRenewer) Renew(node, name string, old *x509.Certificate) ([]byte, error) {
	plan, err := s.Plan()
	if err != nil {
		return nil, fmt.Errorf("cluster file: %w", err)
	}
	if _, ok := plan.Host(node); !ok {
		return nil, fmt.Errorf("node %q is not in the cluster file", node)
	}
	spec, err := plan.LeafSpecFor(node, name)
	if err != nil {
		return nil, err
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := now()
	if t.After(old.NotAfter) || t.Before(old.NotBefore) {
		return nil, fmt.Errorf("the certificate is not valid now (it expired %s): an expired certificate proves nothing; renew it on a node with the CA key (haplane pki generate) or join again", old.NotAfter.UTC().Format(time.RFC3339))
	}
	if d := pki.Drift(old, spec); d != "" {
		return nil, fmt.Errorf("the certificate is not %s's %s as the cluster file says (%s)", node, name, d)
	}
	c, err := os.ReadFile(filepath.Join(s.PKIDir, spec.CA+".crt"))
	if err != nil {
		return nil, fmt.Errorf("this node cannot renew %s: %w", name, err)
	}
	k, err := os.ReadFile(filepath.Join(s.PKIDir, spec.CA+".key"))
	if err != nil {
		return nil, fmt.Errorf("this node holds no %s key to renew %s", spec.CA, name)
	}
	ca, err := pki.ParseKeyPair(c, k)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", spec.CA, err)
	}
	nc, err := pki.Renew(spec, old, ca, t, plan.LeafValidity())
	if err != nil {
		return nil, err
	}
	return pki.CertPEM(nc), nil
}

// PKISecrets serves the CA certificates and shared keys from a PKI folder.
type PKISecrets struct{ PKIDir string }

// CACerts implements join.Secrets.
func (s PKISecrets) CACerts() (map[string][]byte, error) {
	return readFiles(s.PKIDir, "ca.crt", "front-proxy-ca.crt", "etcd/ca.crt")
}

// SharedKeys implements join.Secrets: what kubeadm's HA guide has the
// operator copy by hand to every control-plane node, and kubeadm's
// certificate upload copies: with external etcd, that includes the
// apiserver's etcd client pair (see sharedPair).
func (s PKISecrets) SharedKeys() (map[string][]byte, error) {
	keys, err := readFiles(s.PKIDir, "ca.key", "front-proxy-ca.key", "etcd/ca.key", "sa.key", "sa.pub")
	if err != nil {
		return nil, err
	}
	if sharedPair(s.PKIDir, sharedEtcdClient) {
		pair, err := readFiles(s.PKIDir, sharedEtcdClient+".crt", sharedEtcdClient+".key")
		if err != nil {
			return nil, err
		}
		maps.Copy(keys, pair)
	}
	return keys, nil
}

// sharedEtcdClient is the one leaf every control-plane node may hold the
// same copy of: kube-apiserver's client certificate for etcd, which names
// no node (CN kube-apiserver-etcd-client).
const sharedEtcdClient = "apiserver-etcd-client"

// sharedPair reports whether a joiner gets this node's own pair of the
// leaf name instead of a certificate signed for its CSR: true only for
// sharedEtcdClient, on a node that holds no etcd CA key (external etcd,
// whose CA key stays on the etcd hosts) but holds the pair. kubeadm's
// certificate upload shares the same pair among control-plane nodes in
// that topology.
func sharedPair(pkiDir, name string) bool {
	if name != sharedEtcdClient {
		return false
	}
	if _, err := os.Stat(filepath.Join(pkiDir, pki.EtcdCA+".key")); err == nil {
		return false
	}
	for _, ext := range []string{".crt", ".key"} {
		if _, err := os.Stat(filepath.Join(pkiDir, name+ext)); err != nil {
			return false
		}
	}
	return true
}

func readFiles(dir string, names ...string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && n == "etcd/ca.key" {
				continue // external topology: control-plane nodes hold no etcd CA key
			}
			return nil, err
		}
		out[n] = data
	}
	return out, nil
}

// PeerStatusPath serves this agent's /status to the other nodes, for
// `haplane status --all`; callers must present a client certificate of the
// cluster CA.
const PeerStatusPath = "/haplane/v1/status"

// PeerMaintenancePath+"start" or +"stop" changes a node's maintenance over
// its peer port; callers must present a certificate of the cluster's admin
// identity.
const PeerMaintenancePath = "/haplane/v1/maintenance/"

// JoinPart serves joins over HTTPS on every address (so through the VIP),
// presenting this node's apiserver certificate and the cluster CA, which
// joiners pin by hash. On the same port it serves PeerStatusPath to
// clients with a certificate of the cluster CA.
type JoinPart struct {
	Addr   string // listen address, e.g. ":9445"
	PKIDir string
	Server *join.Server
	Log    *slog.Logger
	// AgentStatus returns the agent's status document (nil: not served).
	AgentStatus func() any
	// Maintenance, when set, serves PeerMaintenancePath to clients with a
	// certificate of the cluster's admin identity (IsAdmin).
	Maintenance *Maintenance

	srv *http.Server
	ln  net.Listener
}

// Name implements Part.
func (p *JoinPart) Name() string { return "join" }

// Start listens and serves.
func (p *JoinPart) Start(_ context.Context, fail func(error)) error {
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	caPEM, err := os.ReadFile(filepath.Join(p.PKIDir, "ca.crt"))
	if err != nil {
		return err
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return err
	}
	// The serving pair is loaded again when the files change, so a
	// renewed apiserver certificate is served without a restart. The CA
	// goes with the leaf: the joiner pins it by hash.
	cert := &keyPairFiles{CertFile: filepath.Join(p.PKIDir, "apiserver.crt"), KeyFile: filepath.Join(p.PKIDir, "apiserver.key"), Chain: [][]byte{ca.Raw}}
	if _, err := cert.Get(); err != nil {
		return fmt.Errorf("join server certificate: %w", err)
	}
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		return fmt.Errorf("join server: %w", err)
	}
	mux := http.NewServeMux()
	if p.Server != nil { // nil: this node holds no CA keys and serves no joins
		mux.Handle(join.Path, p.Server)
		mux.HandleFunc(join.RenewPath, p.Server.ServeRenew)
	}
	mux.HandleFunc("GET "+PeerStatusPath, func(w http.ResponseWriter, r *http.Request) {
		// Joiners have no certificate yet, so client certificates are
		// optional on this port; status needs one of the cluster CA.
		if p.AgentStatus == nil || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "a client certificate of the cluster CA is required", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.AgentStatus())
	})
	mux.HandleFunc("POST "+PeerMaintenancePath+"{action}", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || !IsAdmin(r.TLS.VerifiedChains[0][0]) {
			who := "no client certificate"
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				c := r.TLS.PeerCertificates[0].Subject
				who = fmt.Sprintf("CN=%s O=%v", c.CommonName, c.Organization)
			}
			p.Log.Warn("maintenance change refused: not the cluster's admin identity", "remote", r.RemoteAddr, "client", who, "action", r.PathValue("action"))
			http.Error(w, "maintenance changes need a client certificate of the cluster's admin identity (admin.conf)", http.StatusForbidden)
			return
		}
		if p.Maintenance == nil {
			http.Error(w, "this agent has no maintenance wired", http.StatusNotFound)
			return
		}
		p.Maintenance.ServeChange(w, r, r.PathValue("action"))
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	p.ln = tls.NewListener(ln, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert.Get() }, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: roots})
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	go func() {
		if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail(err)
		}
	}()
	return nil
}

// Stop closes the server.
func (p *JoinPart) Stop(ctx context.Context) error {
	if p.srv == nil {
		return nil
	}
	return p.srv.Shutdown(ctx)
}

// Status implements Statuser.
func (p *JoinPart) Status() any {
	if p.ln == nil {
		return map[string]string{"listen": p.Addr}
	}
	return map[string]string{"listen": p.ln.Addr().String()}
}
