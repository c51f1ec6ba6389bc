package join

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// RenewPath is where a node that holds no CA key asks a peer to renew the
// certificates it already has.
//
// The request is authenticated by proof of possession, as kubelet client
// certificate rotation is: for each certificate the node sends it along
// with a CSR signed by its key, and the server renews only a certificate
// that it signed, that is still valid and that carries exactly the names
// the cluster file gives that node (the Renewer's checks). The renewed
// certificate is for the same key and the same names, so the request can
// gain its sender nothing it did not already hold; a stolen certificate
// without its key cannot make the CSR. Nothing secret crosses the wire
// either way: no token, no key.
const RenewPath = "/haplane/v1/renew"

// RenewItem proves the node holds one certificate.
type RenewItem struct {
	Cert string `json:"cert"` // PEM
	CSR  string `json:"csr"`  // PEM, signed by the certificate's key
}

// RenewRequest is what a node sends to RenewPath.
type RenewRequest struct {
	Cluster string               `json:"cluster,omitempty"`
	Node    string               `json:"node"`
	Certs   map[string]RenewItem `json:"certs"`
}

// RenewResponse maps each name to its renewed certificate, PEM.
type RenewResponse struct {
	Certs map[string]string `json:"certs"`
}

// Renewer re-issues a certificate a node proved it holds. It must refuse
// (with an error that says why) one it did not sign, one that is expired,
// and one whose names are not exactly those node's plan gives name; it
// returns the renewed certificate for old's public key, PEM.
type Renewer interface {
	Renew(node, name string, old *x509.Certificate) ([]byte, error)
}

// ServeRenew answers RenewPath with s.Renewer, under the same per-source
// rate limit as joins.
func (s *Server) ServeRenew(w http.ResponseWriter, r *http.Request) {
	src, rp, ok := s.begin(w, r, "renewal")
	if !ok {
		return
	}
	if s.Renewer == nil {
		rp.refuse(http.StatusNotFound, "this node renews no certificates", errors.New("no renewer"))
		return
	}
	if !s.allow(src) {
		rp.refuse(http.StatusTooManyRequests, "too many attempts; wait a minute", errors.New("rate limited"))
		return
	}
	var req RenewRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		rp.refuse(http.StatusBadRequest, "malformed request", err)
		return
	}
	rp.log = rp.log.With("node", req.Node)
	if req.Cluster != "" && req.Cluster != s.Cluster {
		rp.refuse(http.StatusForbidden, fmt.Sprintf("this server belongs to cluster %q", s.Cluster), fmt.Errorf("cluster %q", req.Cluster))
		return
	}
	if len(req.Certs) == 0 {
		rp.refuse(http.StatusBadRequest, "no certificate to renew", errors.New("empty request"))
		return
	}
	out := RenewResponse{Certs: map[string]string{}}
	names := make([]string, 0, len(req.Certs))
	for n := range req.Certs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		old, err := provenCert(req.Certs[name])
		if err != nil {
			rp.refuse(http.StatusForbidden, name+": "+err.Error(), err)
			return
		}
		certPEM, err := s.Renewer.Renew(req.Node, name, old)
		if err != nil {
			rp.refuse(http.StatusForbidden, name+": "+err.Error(), err)
			return
		}
		out.Certs[name] = string(certPEM)
	}
	rp.log.Info("renewed certificates", "certificates", names)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// provenCert parses an item and checks its CSR proves the certificate's key.
func provenCert(it RenewItem) (*x509.Certificate, error) {
	old, err := parsePEMCert([]byte(it.Cert))
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	blk, _ := pem.Decode([]byte(it.CSR))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the CSR is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return nil, fmt.Errorf("the CSR is invalid: %w", err)
	}
	if !bytes.Equal(csr.RawSubjectPublicKeyInfo, old.RawSubjectPublicKeyInfo) {
		return nil, errors.New("the CSR is not signed by the certificate's key")
	}
	return old, nil
}

// RenewInput is one certificate to renew with its key (which stays here)
// and the CA certificate that signed it (the answer must be signed by it
// too).
type RenewInput struct {
	Cert   *x509.Certificate
	Key    crypto.Signer
	Issuer *x509.Certificate
}

// RenewOptions configure a renewal request.
type RenewOptions struct {
	// Servers are join servers (host:port) to ask in turn until one
	// renews everything.
	Servers []string
	// Roots verifies the servers' certificate (the cluster CA), whose SANs
	// hold every node's address and the VIP. A host without the cluster
	// CA (an external etcd host holds only the etcd CA) passes nil: the
	// server is then not authenticated, which costs nothing but the chance
	// of a refusal, since nothing secret is sent and every answer is
	// checked against Issuer and the node's own key before it is used.
	Roots   *x509.CertPool
	Cluster string
	Node    string
	Certs   map[string]RenewInput
	// Timeout bounds one server's exchange (default 10s).
	Timeout time.Duration
}

// Renew asks the servers in turn to renew o.Certs and returns the renewed
// certificates once one answered for all of them, each checked: the same
// key, the same names, signed by the same CA, valid longer than the old.
func Renew(ctx context.Context, o RenewOptions) (map[string]*x509.Certificate, error) {
	if len(o.Servers) == 0 {
		return nil, errors.New("join: renew: no server to ask")
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	req := RenewRequest{Cluster: o.Cluster, Node: o.Node, Certs: map[string]RenewItem{}}
	for name, in := range o.Certs {
		if in.Cert == nil || in.Key == nil || in.Issuer == nil {
			return nil, fmt.Errorf("join: renew %s: certificate, key and issuer are all needed", name)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: in.Cert.Subject}, in.Key)
		if err != nil {
			return nil, fmt.Errorf("join: renew %s: CSR: %w", name, err)
		}
		req.Certs[name] = RenewItem{
			Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: in.Cert.Raw})),
			CSR:  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, srv := range o.Servers {
		out, err := renewFrom(ctx, srv, body, o)
		if err == nil {
			return out, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	// One line: each server's refusal, in the order asked.
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return nil, fmt.Errorf("%s", strings.Join(msgs, "; "))
}

func renewFrom(ctx context.Context, server string, body []byte, o RenewOptions) (map[string]*x509.Certificate, error) {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return nil, fmt.Errorf("join: renew: server %q: %w", server, err)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: o.Roots, ServerName: host}
	if o.Roots == nil {
		tlsConf.InsecureSkipVerify = true //nolint:gosec // documented on RenewOptions.Roots: the answer is verified instead
	}
	client := &http.Client{Timeout: o.Timeout, Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: nil}}
	defer client.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+server+RenewPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("join: renew: %s: %w", server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("join: renew: %s: read answer: %w", server, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		_ = json.Unmarshal(data, &eb)
		return nil, fmt.Errorf("join: renew: refused by %s (%s): %s", server, resp.Status, eb.Error)
	}
	var r RenewResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("join: renew: %s: malformed answer: %w", server, err)
	}
	out := map[string]*x509.Certificate{}
	for name, in := range o.Certs {
		p, ok := r.Certs[name]
		if !ok {
			return nil, fmt.Errorf("join: renew: %s did not renew %s", server, name)
		}
		c, err := parsePEMCert([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("join: renew: %s: certificate %s: %w", server, name, err)
		}
		if err := checkRenewed(c, in); err != nil {
			return nil, fmt.Errorf("join: renew: %s: certificate %s: %w", server, name, err)
		}
		out[name] = c
	}
	return out, nil
}

// checkRenewed holds a renewed certificate to its predecessor.
func checkRenewed(c *x509.Certificate, in RenewInput) error {
	switch {
	case !bytes.Equal(c.RawSubjectPublicKeyInfo, in.Cert.RawSubjectPublicKeyInfo):
		return errors.New("not for this node's key")
	case c.CheckSignatureFrom(in.Issuer) != nil:
		return errors.New("not signed by the CA that signed the old one")
	case c.Subject.String() != in.Cert.Subject.String() || !slices.Equal(sortedCopy(c.DNSNames), sortedCopy(in.Cert.DNSNames)) || !sameIPs(c.IPAddresses, in.Cert.IPAddresses):
		return errors.New("its names differ from the old one's")
	case !c.NotAfter.After(in.Cert.NotAfter):
		return fmt.Errorf("it expires %s, no later than the old one", c.NotAfter.Format(time.RFC3339))
	}
	return nil
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func sameIPs(a, b []net.IP) bool {
	str := func(ips []net.IP) []string {
		var out []string
		for _, ip := range ips {
			out = append(out, ip.String())
		}
		slices.Sort(out)
		return out
	}
	return strings.Join(str(a), ",") == strings.Join(str(b), ",")
}
