package join

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Path is the HTTP path of the join endpoint.
const Path = "/haplane/v1/join"

// The HPKE suite sealing the shared keys: hybrid ML-KEM-768 + X25519, so a
// recorded join stays secret even against a future quantum attacker.
var (
	sealKEM  = hpke.MLKEM768X25519()
	sealKDF  = hpke.HKDFSHA256()
	sealAEAD = hpke.AES256GCM()
)

// DefaultPort is where agents serve joins (on every address, so through the
// VIP too).
const DefaultPort = 9445

func sealInfo(node string) []byte {
	return []byte("haplane join v1\x00" + node)
}

// Request is what a joiner sends, over TLS to a server whose CA it pinned.
type Request struct {
	// Cluster, when set, must be the server's cluster name.
	Cluster string `json:"cluster,omitempty"`
	Node    string `json:"node"`
	Token   string `json:"token"`
	// CSRs maps a certificate's name (e.g. "apiserver", "etcd/server") to a
	// PEM CERTIFICATE REQUEST signed by a key that never leaves the joiner.
	CSRs map[string]string `json:"csrs"`
	// SealKey is the joiner's one-time HPKE public key.
	SealKey []byte `json:"sealKey"`
}

// Response carries the signed certificates, the CA certificates and the
// sealed shared keys.
type Response struct {
	Cluster string `json:"cluster"`
	// ClusterFile is the server's cluster file, so the new node renders
	// its configuration from the same source.
	ClusterFile []byte `json:"clusterFile,omitempty"`
	// CACerts maps a file name (e.g. "ca.crt", "etcd/ca.crt") to PEM.
	CACerts map[string]string `json:"caCerts"`
	// Certs maps each requested name to its signed certificate, PEM.
	Certs map[string]string `json:"certs"`
	// Sealed is the HPKE ciphertext of a JSON map from file name (e.g.
	// "ca.key", "sa.key") to contents.
	Sealed []byte `json:"sealed"`
}

type errorBody struct {
	Error string `json:"error"`
}

// Signer issues a node's certificates. It must refuse (with an error that
// says why) a CSR whose names are not the node's own, or a node it does not
// know; it returns PEM certificates keyed like the CSRs.
type Signer interface {
	Sign(node string, csrs map[string]*x509.CertificateRequest) (map[string][]byte, error)
}

// Secrets returns the cluster's CA certificates and the shared keys a new
// control-plane node needs, keyed by file name.
type Secrets interface {
	CACerts() (map[string][]byte, error)
	SharedKeys() (map[string][]byte, error)
}

// Server answers joins. It is an http.Handler for Path.
type Server struct {
	Cluster string
	Tokens  TokenStore
	Signer  Signer
	Secrets Secrets
	// Renewer renews certificates at RenewPath (nil: refused).
	Renewer Renewer
	// ClusterFile returns the cluster file sent to joiners, read at each
	// join so an edit (the new node added) needs no restart.
	ClusterFile func() ([]byte, error)
	Log         *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Limit is how many join attempts one source address may make per
	// minute (default 10); refusals count.
	Limit int

	mu       sync.Mutex // protects attempts and swept
	attempts map[string][]time.Time
	swept    time.Time // when attempts was last cleared of idle sources
}

// rateWindow is the rate limit's window.
const rateWindow = time.Minute

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// allow applies the per-source rate limit.
func (s *Server) allow(src string) bool {
	limit := s.Limit
	if limit <= 0 {
		limit = 10
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.attempts == nil {
		s.attempts = map[string][]time.Time{}
	}
	// Once a window, forget the sources whose last attempt left it: the
	// map then holds only sources seen in the last two windows, however
	// many addresses a prober cycles through, at a cost of one pass per
	// window.
	if now.Sub(s.swept) >= rateWindow {
		for k, ts := range s.attempts {
			if len(ts) == 0 || now.Sub(ts[len(ts)-1]) >= rateWindow {
				delete(s.attempts, k)
			}
		}
		s.swept = now
	}
	recent := s.attempts[src][:0]
	for _, t := range s.attempts[src] {
		if now.Sub(t) < rateWindow {
			recent = append(recent, t)
		}
	}
	if len(recent) >= limit {
		s.attempts[src] = recent
		return false
	}
	s.attempts[src] = append(recent, now)
	return true
}

// reply answers one join or renewal request: refuse writes the public
// reason as JSON and logs the real one with log, which the handler extends
// (with the node's name) as it learns more.
type reply struct {
	w    http.ResponseWriter
	log  *slog.Logger
	what string // "join" or "renewal"
}

func (rp *reply) refuse(code int, public string, err error) {
	rp.log.Warn(rp.what+" refused", "status", code, "reason", err)
	rp.w.Header().Set("Content-Type", "application/json")
	rp.w.WriteHeader(code)
	_ = json.NewEncoder(rp.w).Encode(errorBody{Error: public})
}

// begin starts answering a join or renewal request (what): its source
// address and its reply. ok is false when r was answered already (not a
// POST).
func (s *Server) begin(w http.ResponseWriter, r *http.Request, what string) (src string, rp *reply, ok bool) {
	src, _, _ = net.SplitHostPort(r.RemoteAddr)
	rp = &reply{w: w, log: s.logger().With("remote", src), what: what}
	if r.Method != http.MethodPost {
		rp.refuse(http.StatusMethodNotAllowed, "POST only", fmt.Errorf("method %s", r.Method))
		return src, rp, false
	}
	return src, rp, true
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src, rp, ok := s.begin(w, r, "join")
	if !ok {
		return
	}
	if !s.allow(src) {
		rp.refuse(http.StatusTooManyRequests, "too many join attempts; wait a minute", errors.New("rate limited"))
		return
	}
	var req Request
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		rp.refuse(http.StatusBadRequest, "malformed request", err)
		return
	}
	rp.log = rp.log.With("node", req.Node)
	tok, err := ParseToken(req.Token)
	if err != nil {
		rp.refuse(http.StatusUnauthorized, "invalid, expired or used token", err)
		return
	}
	if req.Cluster != "" && req.Cluster != s.Cluster {
		rp.refuse(http.StatusUnauthorized, "invalid, expired or used token", fmt.Errorf("%w: %q", ErrTokenCluster, req.Cluster))
		return
	}
	// The token is checked first, so nothing else is looked at for a
	// caller without one, but consumed only as the last step: a join
	// refused for any other reason leaves it usable (nothing written).
	if err := s.Tokens.Check(tok, s.Cluster, s.now()); err != nil {
		rp.refuse(http.StatusUnauthorized, "invalid, expired or used token", err)
		return
	}
	csrs := make(map[string]*x509.CertificateRequest, len(req.CSRs))
	for name, p := range req.CSRs {
		blk, _ := pem.Decode([]byte(p))
		if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
			rp.refuse(http.StatusBadRequest, "CSR "+name+" is not PEM", errors.New("bad CSR PEM"))
			return
		}
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err == nil {
			err = csr.CheckSignature()
		}
		if err != nil {
			rp.refuse(http.StatusBadRequest, "CSR "+name+" is invalid", err)
			return
		}
		csrs[name] = csr
	}
	pub, err := sealKEM.NewPublicKey(req.SealKey)
	if err != nil {
		rp.refuse(http.StatusBadRequest, "invalid seal key", err)
		return
	}
	certs, err := s.Signer.Sign(req.Node, csrs)
	if err != nil {
		rp.refuse(http.StatusForbidden, err.Error(), err)
		return
	}
	cas, err := s.Secrets.CACerts()
	if err != nil {
		rp.refuse(http.StatusInternalServerError, "server cannot read its CA certificates", err)
		return
	}
	keys, err := s.Secrets.SharedKeys()
	if err != nil {
		rp.refuse(http.StatusInternalServerError, "server cannot read the shared keys", err)
		return
	}
	plain, err := json.Marshal(keys)
	if err != nil {
		rp.refuse(http.StatusInternalServerError, "internal error", err)
		return
	}
	sealed, err := hpke.Seal(pub, sealKDF, sealAEAD, sealInfo(req.Node), plain)
	clear(plain)
	if err != nil {
		rp.refuse(http.StatusInternalServerError, "internal error", err)
		return
	}
	var clusterFile []byte
	if s.ClusterFile != nil {
		if clusterFile, err = s.ClusterFile(); err != nil {
			rp.refuse(http.StatusInternalServerError, "server cannot read its cluster file", err)
			return
		}
	}
	resp := Response{Cluster: s.Cluster, ClusterFile: clusterFile, CACerts: map[string]string{}, Certs: map[string]string{}, Sealed: sealed}
	for k, v := range cas {
		resp.CACerts[k] = string(v)
	}
	for k, v := range certs {
		resp.Certs[k] = string(v)
	}
	// Consume is a compare-and-swap: of two joins that got this far with
	// the same token, one is refused here, and its certificates and sealed
	// keys are dropped unsent.
	if err := s.Tokens.Consume(tok, s.Cluster, req.Node+"@"+src, s.now()); err != nil {
		rp.refuse(http.StatusUnauthorized, "invalid, expired or used token", err)
		return
	}
	rp.log.Info("join accepted", "certificates", len(certs), "sharedKeys", len(keys))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// CAHash is kubeadm's public-key pin of a CA: "sha256:" and the hex SHA-256
// of its SubjectPublicKeyInfo.
func CAHash(ca *x509.Certificate) string {
	h := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(h[:])
}

// ErrCAMismatch means the server did not prove it belongs to the pinned CA;
// the joiner stops before sending its token.
var ErrCAMismatch = errors.New("join: the server's certificate does not chain to the CA with the given hash")

// ClientOptions configure a join.
type ClientOptions struct {
	Server  string // host:port of a join server (the VIP)
	Token   string
	CAHash  string // "sha256:<hex>"
	Cluster string // optional: refuse a server of another cluster
	Node    string
	CSRs    map[string]*x509.CertificateRequest
	Timeout time.Duration // whole exchange; default 30s
}

// Result is what a successful join returns; nothing has been written yet.
type Result struct {
	Cluster     string
	ClusterFile []byte
	CACerts     map[string][]byte
	Certs       map[string][]byte
	SharedKeys  map[string][]byte
}

// Join runs the client side: it pins the CA, proves the token, sends the
// CSRs and a one-time seal key, and opens the shared keys.
func Join(ctx context.Context, o ClientOptions) (*Result, error) {
	want := strings.ToLower(strings.TrimSpace(o.CAHash))
	if !strings.HasPrefix(want, "sha256:") || len(want) != len("sha256:")+64 {
		return nil, fmt.Errorf("join: --ca-hash must be sha256:<64 hex digits>, got %q", o.CAHash)
	}
	if _, err := ParseToken(o.Token); err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(o.Server)
	if err != nil {
		return nil, fmt.Errorf("join: server %q: %w", o.Server, err)
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The usual verification is replaced, not skipped: VerifyConnection
		// accepts only a chain to the pinned CA, before any request is sent.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs.PeerCertificates, want, host)
		},
	}
	priv, err := sealKEM.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("join: seal key: %w", err)
	}
	req := Request{Cluster: o.Cluster, Node: o.Node, Token: o.Token, CSRs: map[string]string{}, SealKey: priv.PublicKey().Bytes()}
	for name, csr := range o.CSRs {
		req.CSRs[name] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	client := &http.Client{
		Timeout:   o.Timeout,
		Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: nil},
	}
	defer client.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+o.Server+Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		if errors.Is(err, ErrCAMismatch) {
			return nil, ErrCAMismatch
		}
		return nil, fmt.Errorf("join: %s: %w", o.Server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("join: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		_ = json.Unmarshal(data, &eb)
		return nil, fmt.Errorf("join: refused by %s (%s): %s", o.Server, resp.Status, eb.Error)
	}
	var r Response
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("join: malformed answer: %w", err)
	}
	plain, err := hpke.Open(priv, sealKDF, sealAEAD, sealInfo(o.Node), r.Sealed)
	if err != nil {
		return nil, fmt.Errorf("join: open sealed keys: %w", err)
	}
	var keys map[string][]byte
	if err := json.Unmarshal(plain, &keys); err != nil {
		return nil, fmt.Errorf("join: sealed keys: %w", err)
	}
	clear(plain)
	if o.Cluster != "" && r.Cluster != o.Cluster {
		return nil, fmt.Errorf("join: server belongs to cluster %q, not %q", r.Cluster, o.Cluster)
	}
	res := &Result{Cluster: r.Cluster, ClusterFile: r.ClusterFile, CACerts: map[string][]byte{}, Certs: map[string][]byte{}, SharedKeys: keys}
	for k, v := range r.CACerts {
		res.CACerts[k] = []byte(v)
	}
	// The server signs what the node needs of what it asked for (an
	// external-etcd cluster's control-plane nodes get no etcd member
	// certificates); anything it did not ask for is refused.
	for name, c := range r.Certs {
		if _, asked := o.CSRs[name]; !asked {
			return nil, fmt.Errorf("join: answer holds certificate %q that was not asked for", name)
		}
		res.Certs[name] = []byte(c)
	}
	if len(res.Certs) == 0 {
		return nil, errors.New("join: the server signed no certificate")
	}
	if err := verifyResult(res, o.CSRs, want); err != nil {
		return nil, err
	}
	return res, nil
}

// verifyPinned accepts a server chain only if one of its certificates is a
// CA with the pinned hash and the leaf verifies against it for host.
func verifyPinned(chain []*x509.Certificate, want, host string) error {
	if len(chain) == 0 {
		return ErrCAMismatch
	}
	for _, c := range chain {
		if !c.IsCA || CAHash(c) != want {
			continue
		}
		roots := x509.NewCertPool()
		roots.AddCert(c)
		inter := x509.NewCertPool()
		for _, ic := range chain[1:] {
			inter.AddCert(ic)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host}); err != nil {
			return fmt.Errorf("%w: %v", ErrCAMismatch, err)
		}
		return nil
	}
	return ErrCAMismatch
}

// verifyResult checks what came back before anyone writes it: the cluster
// CA is the pinned one, and each certificate carries the public key of the
// CSR it answers and chains to a CA the server sent.
func verifyResult(res *Result, csrs map[string]*x509.CertificateRequest, want string) error {
	pool := x509.NewCertPool()
	pinned := false
	for name, p := range res.CACerts {
		c, err := parsePEMCert(p)
		if err != nil {
			return fmt.Errorf("join: CA %s: %w", name, err)
		}
		if name == "ca.crt" && CAHash(c) == want {
			pinned = true
		}
		pool.AddCert(c)
	}
	if !pinned {
		return ErrCAMismatch
	}
	for name, p := range res.Certs {
		c, err := parsePEMCert(p)
		if err != nil {
			return fmt.Errorf("join: certificate %s: %w", name, err)
		}
		if !bytes.Equal(c.RawSubjectPublicKeyInfo, csrs[name].RawSubjectPublicKeyInfo) {
			return fmt.Errorf("join: certificate %s is not for the key this node generated", name)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("join: certificate %s does not chain to the cluster CAs: %w", name, err)
		}
	}
	return nil
}

func parsePEMCert(p []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(p)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}
