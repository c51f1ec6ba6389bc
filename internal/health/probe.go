package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"
)

// Kind selects what a probe checks.
type Kind string

const (
	// KindTCP passes when a TCP connection is established.
	KindTCP Kind = "tcp"
	// KindTLS passes when a TLS handshake completes (and verifies, when a
	// CA pool is given).
	KindTLS Kind = "tls"
	// KindHTTPS passes when GET Path over TLS answers ExpectStatus.
	KindHTTPS Kind = "https"
)

// Defaults for ProbeConfig.
const (
	DefaultKind         = KindHTTPS
	DefaultPath         = "/readyz"
	DefaultExpectStatus = http.StatusOK
	DefaultTimeout      = time.Second
)

// ProbeConfig says how to probe a target.
type ProbeConfig struct {
	// Kind is tcp, tls or https (default https).
	Kind Kind
	// Path is fetched by https probes (default /readyz).
	Path string
	// LivenessPath is fetched by https probes when Path fails: a target
	// that answers it is live though not ready (panic routing may use it).
	// Empty: no liveness probe; a target that fails Path is dead.
	LivenessPath string
	// ExpectStatus is the status an https probe must get (default 200).
	ExpectStatus int
	// Timeout bounds one probe, connect to last byte (default 1s).
	Timeout time.Duration
	// RootCAs verifies the target's certificate. When nil, tls and https
	// probes do not verify it: they then only prove the target speaks TLS
	// (and answers the path), which is what the recipe's haproxy did.
	RootCAs *x509.CertPool
	// ServerName is the name verified in the target's certificate; empty
	// means the target's IP address, which kubeadm puts in the apiserver
	// certificate's SANs.
	ServerName string
	// Certificates are client certificates presented to the target, for
	// servers that refuse anonymous requests.
	Certificates []tls.Certificate
}

func (c *ProbeConfig) setDefaults() {
	if c.Kind == "" {
		c.Kind = DefaultKind
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.ExpectStatus == 0 {
		c.ExpectStatus = DefaultExpectStatus
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

func (c *ProbeConfig) validate() error {
	switch c.Kind {
	case KindTCP, KindTLS, KindHTTPS:
	default:
		return fmt.Errorf("health: kind %q is not one of tcp, tls, https", c.Kind)
	}
	if c.Path == "" || c.Path[0] != '/' {
		return fmt.Errorf("health: path %q must start with '/'", c.Path)
	}
	if c.LivenessPath != "" && c.LivenessPath[0] != '/' {
		return fmt.Errorf("health: liveness path %q must start with '/'", c.LivenessPath)
	}
	if c.ExpectStatus < 100 || c.ExpectStatus > 599 {
		return fmt.Errorf("health: expected status %d is not an HTTP status", c.ExpectStatus)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("health: timeout %v must be positive", c.Timeout)
	}
	return nil
}

// Result is the outcome of one probe.
type Result struct {
	OK      bool
	Err     error // why the probe failed; nil when OK
	Latency time.Duration
	// Unreachable is a failed HTTPS probe that got no TCP connection to
	// the target (refused, unroutable, or the timeout spent connecting):
	// a liveness probe of the same address would only fail the same way,
	// after another timeout, so the checker does not send one.
	Unreachable bool
}

// Prober probes one target. It keeps one http.Client (and transport) for
// the target's whole life, but disables keep-alive so every probe opens a
// fresh connection: a reused connection would keep passing after the
// backend stopped accepting new ones, which is exactly what clients see.
// A Prober is safe for concurrent use.
type Prober struct {
	cfg     ProbeConfig
	addr    string
	url     string
	liveURL string // "" without a liveness path
	dialer  net.Dialer
	tls     *tls.Config
	client  *http.Client
}

// NewProber returns a prober of addr (host:port) with cfg (defaults applied).
func NewProber(addr string, cfg ProbeConfig) (*Prober, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("health: target %q: %w", addr, err)
	}
	p := &Prober{cfg: cfg, addr: addr, dialer: net.Dialer{Timeout: cfg.Timeout}}
	name := cfg.ServerName
	if name == "" {
		name = host
	}
	p.tls = &tls.Config{
		ServerName:   name,
		RootCAs:      cfg.RootCAs,
		Certificates: cfg.Certificates,
		// Without a CA there is nothing to verify against; see RootCAs.
		InsecureSkipVerify: cfg.RootCAs == nil, //nolint:gosec // documented: no CA given
		MinVersion:         tls.VersionTLS12,
		// Resumed handshakes spare the target a signature and the prober
		// a chain verification on most probes (five a second per target
		// at the default interval); every fullHandshakeEvery-th probe
		// still does a full handshake, so the certificate is verified
		// every couple of seconds.
		ClientSessionCache: &resumeCache{inner: tls.NewLRUClientSessionCache(4), every: fullHandshakeEvery},
		// Classic key exchange only: a probe carries nothing worth
		// protecting from a future quantum computer, and the default
		// hybrid (X25519MLKEM768) costs both ends an ML-KEM operation and
		// the ClientHello 1.2 KB (two segments instead of one) on every
		// probe. The same groups as Go's default otherwise, so a backend
		// restricted to the NIST curves (FIPS) still answers.
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521},
	}
	if cfg.Kind == KindHTTPS {
		tr := &http.Transport{
			DialContext:         p.dialer.DialContext,
			TLSClientConfig:     p.tls,
			TLSHandshakeTimeout: cfg.Timeout,
			DisableKeepAlives:   true,
			DisableCompression:  true,
			MaxIdleConns:        -1,
			ForceAttemptHTTP2:   false,
			Proxy:               nil, // a probe goes to the target, never through a proxy
		}
		p.client = &http.Client{
			Transport: tr,
			Timeout:   cfg.Timeout,
			// A redirect is an answer, not something to follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		p.url = "https://" + addr + cfg.Path
		if cfg.LivenessPath != "" {
			p.liveURL = "https://" + addr + cfg.LivenessPath
		}
	}
	return p, nil
}

// Addr is the probed target.
func (p *Prober) Addr() string { return p.addr }

// Probe runs one probe, bounded by the configured timeout and ctx.
func (p *Prober) Probe(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	start := time.Now()
	var connected atomic.Bool
	if p.cfg.Kind == KindHTTPS {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{ConnectDone: func(_, _ string, err error) {
			if err == nil {
				connected.Store(true)
			}
		}})
	}
	err := p.probe(ctx)
	return Result{OK: err == nil, Err: err, Latency: time.Since(start), Unreachable: err != nil && p.cfg.Kind == KindHTTPS && !connected.Load()}
}

// Live reports whether the prober has a liveness probe.
func (p *Prober) Live() bool { return p.liveURL != "" }

// ProbeLive runs one liveness probe: GET LivenessPath expecting
// ExpectStatus. Without a liveness path it fails.
func (p *Prober) ProbeLive(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	start := time.Now()
	err := errors.New("health: no liveness path")
	if p.liveURL != "" {
		err = p.get(ctx, p.liveURL)
	}
	return Result{OK: err == nil, Err: err, Latency: time.Since(start)}
}

func (p *Prober) probe(ctx context.Context) error {
	switch p.cfg.Kind {
	case KindTCP:
		c, err := p.dialer.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return fmt.Errorf("health: connect %s: %w", p.addr, err)
		}
		return c.Close()
	case KindTLS:
		c, err := p.dialer.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return fmt.Errorf("health: connect %s: %w", p.addr, err)
		}
		tc := tls.Client(c, p.tls)
		defer tc.Close()
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("health: tls handshake with %s: %w", p.addr, err)
		}
		return nil
	default:
		return p.get(ctx, p.url)
	}
}

// get fetches url and expects ExpectStatus.
func (p *Prober) get(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health: request %s: %w", url, err)
	}
	req.Header.Set("User-Agent", "haplane-health")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("health: GET %s: %w", url, err)
	}
	// Read a little of the body so a server that answers slowly is
	// caught by the timeout, then drop the connection.
	_, _ = io.CopyN(io.Discard, resp.Body, 4096)
	resp.Body.Close()
	if resp.StatusCode != p.cfg.ExpectStatus {
		return &StatusError{URL: url, Got: resp.StatusCode, Want: p.cfg.ExpectStatus}
	}
	return nil
}

// fullHandshakeEvery: one probe in this many skips session resumption.
const fullHandshakeEvery = 10

// resumeCache is a TLS session cache that misses on every every-th
// lookup, forcing a full, verified handshake then.
type resumeCache struct {
	inner tls.ClientSessionCache
	every int

	mu sync.Mutex // protects n
	n  int
}

func (c *resumeCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	c.n++
	full := c.n%c.every == 0
	c.mu.Unlock()
	if full {
		return nil, false
	}
	return c.inner.Get(key)
}

func (c *resumeCache) Put(key string, cs *tls.ClientSessionState) { c.inner.Put(key, cs) }

// StatusError is an https probe that got an unexpected status.
type StatusError struct {
	URL       string
	Got, Want int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("health: GET %s: status %d, want %d", e.URL, e.Got, e.Want)
}

// Close releases the prober's idle resources.
func (p *Prober) Close() {
	if p.client != nil {
		p.client.CloseIdleConnections()
	}
}
