package join

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/testutil/testbuf"
)

// testCA is a real CA made with crypto/x509: the protocol is tested with
// real certificates, real TLS on loopback and real HPKE.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(t *testing.T, pub any, cn string, ips []net.IP, eku x509.ExtKeyUsage) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  ips,
		DNSNames:     []string{cn},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{eku},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// nodeSigner signs a node's CSRs only when they ask for that node's own
// name and address, as the agent's pki-backed signer does.
type nodeSigner struct {
	t     *testing.T
	ca    *testCA
	nodes map[string]string // name -> address
}

func (s nodeSigner) Sign(node string, csrs map[string]*x509.CertificateRequest) (map[string][]byte, error) {
	addr, ok := s.nodes[node]
	if !ok {
		return nil, fmt.Errorf("node %q is not in the cluster file", node)
	}
	out := map[string][]byte{}
	for name, csr := range csrs {
		if csr.Subject.CommonName != node {
			return nil, fmt.Errorf("CSR %s asks for %q, not this node's name %q", name, csr.Subject.CommonName, node)
		}
		for _, ip := range csr.IPAddresses {
			if ip.String() != addr && !ip.IsLoopback() {
				return nil, fmt.Errorf("CSR %s asks for address %s, not this node's %s", name, ip, addr)
			}
		}
		out[name] = s.ca.issue(s.t, csr.PublicKey, node, csr.IPAddresses, x509.ExtKeyUsageServerAuth)
	}
	return out, nil
}

type secrets struct{ ca *testCA }

func (s secrets) CACerts() (map[string][]byte, error) {
	return map[string][]byte{"ca.crt": s.ca.pem}, nil
}

func (s secrets) SharedKeys() (map[string][]byte, error) {
	return map[string][]byte{"ca.key": []byte("CA KEY PEM"), "sa.key": []byte("SA KEY PEM")}, nil
}

type harness struct {
	addr    string
	store   *Store
	ca      *testCA
	sawBody atomic.Int32 // requests that reached the handler
	srv     *Server
	log     *logLines
}

// logLines collects the server's JSON log lines.
type logLines struct{ testbuf.Buffer }

// records returns every line logged so far, decoded.
func (l *logLines) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(l.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// startServer serves joins over real TLS on 127.0.0.1 with a certificate
// issued by ca (the agent uses its apiserver certificate, which names the VIP).
func startServer(t *testing.T, ca *testCA) *harness {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := ca.issue(t, &key.PublicKey, "127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, x509.ExtKeyUsageServerAuth)
	blk, _ := pem.Decode(leaf)
	cert := tls.Certificate{Certificate: [][]byte{blk.Bytes, ca.cert.Raw}, PrivateKey: key}
	h := &harness{store: &Store{Path: filepath.Join(t.TempDir(), "tokens.json")}, ca: ca, log: &logLines{}}
	h.srv = &Server{
		Cluster: "lab",
		Tokens:  h.store,
		Signer:  nodeSigner{t: t, ca: ca, nodes: map[string]string{"cp4": "10.77.0.14"}},
		Secrets: secrets{ca: ca},
		Log:     slog.New(slog.NewJSONHandler(h.log, nil)),
		Limit:   50,
	}
	mux := http.NewServeMux()
	mux.HandleFunc(Path, func(w http.ResponseWriter, r *http.Request) {
		h.sawBody.Add(1)
		h.srv.ServeHTTP(w, r)
	})
	mux.HandleFunc(RenewPath, func(w http.ResponseWriter, r *http.Request) { h.srv.ServeRenew(w, r) })
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	h.addr = ln.Addr().String()
	return h
}

func csrFor(t *testing.T, cn string, ips ...string) *x509.CertificateRequest {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	return csr
}

func TestJoinSucceedsOnceWithPinnedCA(t *testing.T) {
	ca := newCA(t, "kubernetes")
	h := startServer(t, ca)
	tok, err := h.store.Create("lab", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	opts := ClientOptions{
		Server: h.addr, Token: tok.String(), CAHash: CAHash(ca.cert), Cluster: "lab", Node: "cp4",
		CSRs: map[string]*x509.CertificateRequest{"etcd/server": csrFor(t, "cp4", "10.77.0.14", "127.0.0.1")},
	}
	res, err := Join(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.CACerts["ca.crt"]) != string(ca.pem) {
		t.Error("CA certificate is not byte-identical to the cluster's")
	}
	if string(res.SharedKeys["ca.key"]) != "CA KEY PEM" || len(res.SharedKeys) != 2 {
		t.Errorf("shared keys = %v", res.SharedKeys)
	}
	c, err := parsePEMCert(res.Certs["etcd/server"])
	if err != nil || c.Subject.CommonName != "cp4" {
		t.Fatalf("leaf: %v %v", c, err)
	}
	// Replay: the same token is refused.
	opts.CSRs = map[string]*x509.CertificateRequest{"etcd/server": csrFor(t, "cp4", "10.77.0.14")}
	if _, err := Join(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "invalid, expired or used token") {
		t.Fatalf("replayed token: err = %v", err)
	}
	list, _ := h.store.List()
	if len(list) != 1 || !list[0].Used || !strings.HasPrefix(list[0].UsedBy, "cp4@127.0.0.1") {
		t.Errorf("store after use = %+v", list)
	}
}

func TestImpostorServerNeverSeesTheToken(t *testing.T) {
	real := newCA(t, "kubernetes")
	impostor := newCA(t, "kubernetes") // same name, other key
	h := startServer(t, impostor)
	tok, _ := h.store.Create("lab", time.Hour, time.Now())
	_, err := Join(context.Background(), ClientOptions{
		Server: h.addr, Token: tok.String(), CAHash: CAHash(real.cert), Cluster: "lab", Node: "cp4",
		CSRs: map[string]*x509.CertificateRequest{"x": csrFor(t, "cp4")},
	})
	if !errors.Is(err, ErrCAMismatch) {
		t.Fatalf("err = %v, want ErrCAMismatch", err)
	}
	if n := h.sawBody.Load(); n != 0 {
		t.Fatalf("impostor received %d request(s): the token left the joiner", n)
	}
}

func TestRefusals(t *testing.T) {
	ca := newCA(t, "kubernetes")
	h := startServer(t, ca)
	now := time.Now()
	expired, _ := h.store.Create("lab", time.Minute, now.Add(-2*time.Minute))
	other, _ := h.store.Create("other", time.Hour, now)
	good, _ := h.store.Create("lab", time.Hour, now)
	forged := good
	forged.Secret = strings.Repeat("a", 16)
	stored, err := os.ReadFile(h.store.Path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		token   string
		cluster string
		node    string
		csr     *x509.CertificateRequest
		want    string // in the joiner's error
		reason  string // in the server's "join refused" log line
	}{
		{"expired token", expired.String(), "lab", "cp4", csrFor(t, "cp4"), "invalid, expired or used token", ErrTokenExpired.Error()},
		{"token of another cluster", other.String(), "lab", "cp4", csrFor(t, "cp4"), "invalid, expired or used token", ErrTokenCluster.Error()},
		{"joiner claims another cluster", good.String(), "prod", "cp4", csrFor(t, "cp4"), "invalid, expired or used token", ErrTokenCluster.Error() + `: "prod"`},
		{"wrong secret", forged.String(), "lab", "cp4", csrFor(t, "cp4"), "invalid, expired or used token", ErrTokenSecret.Error()},
		{"unknown token", "zzzzzz.zzzzzzzzzzzzzzzz", "lab", "cp4", csrFor(t, "cp4"), "invalid, expired or used token", ErrTokenUnknown.Error()},
		{"CSR for another node's name", good.String(), "lab", "cp4", csrFor(t, "cp1", "10.77.0.11"), "not this node's name", `asks for "cp1", not this node's name "cp4"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.log.records(t))
			_, err := Join(context.Background(), ClientOptions{
				Server: h.addr, Token: tc.token, CAHash: CAHash(ca.cert), Cluster: tc.cluster, Node: tc.node,
				CSRs: map[string]*x509.CertificateRequest{"apiserver": tc.csr},
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			lines := h.log.records(t)[before:]
			if len(lines) != 1 || lines[0]["msg"] != "join refused" || lines[0]["level"] != "WARN" || lines[0]["node"] != tc.node ||
				!strings.Contains(fmt.Sprint(lines[0]["reason"]), tc.reason) {
				t.Errorf("server logged %v, want one WARN \"join refused\" for node %s with a reason containing %q", lines, tc.node, tc.reason)
			}
		})
	}
	// Nothing was written on the server: the token file is as it was.
	if after, err := os.ReadFile(h.store.Path); err != nil || !bytes.Equal(after, stored) {
		t.Fatalf("token store changed by refused joins (err %v):\n%s\n--- was\n%s", err, after, stored)
	}
	// The refused CSR left the good token usable: the same node, now asking
	// for its own name, joins with it, once.
	opts := ClientOptions{
		Server: h.addr, Token: good.String(), CAHash: CAHash(ca.cert), Cluster: "lab", Node: "cp4",
		CSRs: map[string]*x509.CertificateRequest{"apiserver": csrFor(t, "cp4", "10.77.0.14")},
	}
	if _, err := Join(context.Background(), opts); err != nil {
		t.Fatalf("token after a refused CSR: %v", err)
	}
	if _, err := Join(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "invalid, expired or used token") {
		t.Fatalf("token reused after a successful join: err = %v", err)
	}
	last := h.log.records(t)
	if r := last[len(last)-1]; r["msg"] != "join refused" || !strings.Contains(fmt.Sprint(r["reason"]), ErrTokenUsed.Error()) {
		t.Errorf("replay logged %v, want \"join refused\" with %q", r, ErrTokenUsed)
	}
	for _, bad := range []string{"", "abc.def", "ABCDEF.0123456789abcdef", "abcdef-0123456789abcdef"} {
		if _, err := ParseToken(bad); !errors.Is(err, ErrTokenFormat) {
			t.Errorf("ParseToken(%q) = %v", bad, err)
		}
	}
}

// barrierSigner holds every Sign call until n of them are waiting, so n
// joins with one token have all passed the token check before any of them
// reaches the consume step.
type barrierSigner struct {
	Signer
	arrived chan struct{}
	n       int
}

func (b barrierSigner) Sign(node string, csrs map[string]*x509.CertificateRequest) (map[string][]byte, error) {
	b.arrived <- struct{}{}
	deadline := time.After(10 * time.Second)
	for len(b.arrived) < b.n {
		select {
		case <-deadline:
			return nil, errors.New("barrier: the other joins never arrived")
		case <-time.After(time.Millisecond):
		}
	}
	return b.Signer.Sign(node, csrs)
}

// TestConcurrentJoinsOneToken: joins that all passed the token check race
// to consume it; exactly one gets the keys.
func TestConcurrentJoinsOneToken(t *testing.T) {
	ca := newCA(t, "kubernetes")
	h := startServer(t, ca)
	const n = 4
	h.srv.Signer = barrierSigner{Signer: h.srv.Signer, arrived: make(chan struct{}, n), n: n}
	tok, err := h.store.Create("lab", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Join(context.Background(), ClientOptions{
				Server: h.addr, Token: tok.String(), CAHash: CAHash(ca.cert), Cluster: "lab", Node: "cp4",
				CSRs: map[string]*x509.CertificateRequest{"apiserver": csrFor(t, "cp4", "10.77.0.14")},
			})
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !strings.Contains(err.Error(), "invalid, expired or used token"):
			t.Errorf("loser: %v, want a token refusal", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent joins with one token succeeded, want 1: %v", wins, n, errs)
	}
	used := 0
	for _, r := range h.log.records(t) {
		if r["msg"] == "join refused" && strings.Contains(fmt.Sprint(r["reason"]), ErrTokenUsed.Error()) {
			used++
		}
	}
	if used != n-1 {
		t.Errorf("%d refusals logged for the used token, want %d", used, n-1)
	}
}

func TestRateLimit(t *testing.T) {
	ca := newCA(t, "kubernetes")
	h := startServer(t, ca)
	h.srv.Limit = 3
	var codes []string
	for range 5 {
		_, err := Join(context.Background(), ClientOptions{
			Server: h.addr, Token: "zzzzzz.zzzzzzzzzzzzzzzz", CAHash: CAHash(ca.cert), Cluster: "lab", Node: "cp4",
			CSRs: map[string]*x509.CertificateRequest{"a": csrFor(t, "cp4")},
		})
		codes = append(codes, fmt.Sprint(err))
	}
	limited := 0
	for _, c := range codes {
		if strings.Contains(c, "429") {
			limited++
		}
	}
	if limited != 2 {
		t.Fatalf("%d of 5 attempts rate limited, want 2: %v", limited, codes)
	}
	logged := 0
	for _, r := range h.log.records(t) {
		if r["msg"] == "join refused" && r["reason"] == "rate limited" && r["status"] == float64(http.StatusTooManyRequests) {
			logged++
		}
	}
	if logged != 2 {
		t.Errorf("%d \"join refused\" lines for the rate limit, want 2", logged)
	}
}

// TestRateLimitForgetsIdleSources: the per-source attempt map keeps only
// sources seen within the last windows, so a prober cycling through
// addresses cannot grow it without bound, and a source still inside its
// window stays limited.
func TestRateLimitForgetsIdleSources(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Server{Cluster: "lab", Limit: 2, Now: func() time.Time { return now }}
	post := func(src string) int {
		r := httptest.NewRequest(http.MethodPost, Path, strings.NewReader("{}"))
		r.RemoteAddr = src + ":40000"
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w.Code
	}
	size := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.attempts)
	}
	for i := range 1000 {
		if code := post(fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)); code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: status %d, want 401 (no token)", i, code)
		}
	}
	if n := size(); n != 1000 {
		t.Fatalf("%d sources tracked, want 1000", n)
	}
	now = now.Add(30 * time.Second)
	for i, want := range []int{http.StatusUnauthorized, http.StatusUnauthorized, http.StatusTooManyRequests} {
		if code := post("127.2.0.1"); code != want {
			t.Fatalf("busy source, attempt %d: status %d, want %d", i, code, want)
		}
	}
	// 61s after the first burst: those sources are forgotten, the busy one
	// (31s ago) is kept and still limited.
	now = now.Add(31 * time.Second)
	if code := post("127.2.0.2"); code != http.StatusUnauthorized {
		t.Fatalf("new source: status %d", code)
	}
	if n := size(); n != 2 {
		t.Fatalf("%d sources tracked after the window, want 2 (the busy one and the new one)", n)
	}
	if code := post("127.2.0.1"); code != http.StatusTooManyRequests {
		t.Fatalf("busy source inside its window: status %d, want 429", code)
	}
	// Ten more windows, a minute apart, of 500 new sources each: each
	// window's sweep drops the previous one's, so the map never holds more
	// than one window's sources (without pruning: 5000).
	most := 0
	for w := range 10 {
		now = now.Add(61 * time.Second)
		for i := range 500 {
			post(fmt.Sprintf("127.%d.%d.%d", 4+w, i/250, i%250+1))
			most = max(most, size())
		}
	}
	if most != 500 {
		t.Fatalf("the attempt map held up to %d sources, want 500 (one window's)", most)
	}
}

// TestConcurrentConsumeOnce races many joiners on one token across two
// stores on the same file (as `haplane token create` and the agent are):
// exactly one wins.
func TestConcurrentConsumeOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens.json")
	a, b := &Store{Path: p}, &Store{Path: p}
	tok, err := a.Create("lab", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raceConsume(t, tok, 20, a, b)
}

// raceConsume races n joiners on tok for cluster lab, taking the stores in
// turn: exactly one wins, and every loser is told ErrTokenUsed itself (not
// wrapped, not another failure).
func raceConsume(t *testing.T, tok Token, n int, stores ...TokenStore) {
	t.Helper()
	var wg sync.WaitGroup
	var wins atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := stores[i%len(stores)].Consume(tok, "lab", fmt.Sprint(i), time.Now())
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, ErrTokenUsed) || err.Error() != ErrTokenUsed.Error():
				t.Errorf("loser %d: %v, want %v", i, err, ErrTokenUsed)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners, want exactly 1", wins.Load())
	}
}
