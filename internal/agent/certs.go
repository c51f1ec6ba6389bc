package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haplane/haplane/internal/join"
	"github.com/haplane/haplane/internal/pki"
)

// Pickup says how a reader of a certificate file learns of a renewed one.
type Pickup string

// Ways a reader picks up a renewed certificate.
const (
	// PicksUpItself: the reader reads the file again at each TLS
	// handshake, or watches it; a renewal needs nothing more.
	PicksUpItself Pickup = "picks-up-itself"
	// ReadsPerUse: no process holds it; each command run reads it.
	ReadsPerUse Pickup = "reads-per-use"
	// NeedsRestart: read once at start; the process must restart.
	NeedsRestart Pickup = "needs-restart"
)

// Reader is one component that reads a certificate file, and how it
// learns of a new one.
type Reader struct {
	Component string `json:"component"`
	Pickup    Pickup `json:"pickup"`
	Why       string `json:"why"`
}

// Components a renewal may have to restart, in the order they are
// restarted (each waited for before the next).
const (
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
)

// certReaders is who reads each of kubeadm's leaves on a control-plane or
// etcd host, and how each learns of a renewal. Because a renewal keeps the
// key (pki.Renew), only the certificate file changes, in one rename: a
// reader that loads the pair at a handshake sees the old pair or the new
// one, never a mix.
var certReaders = map[string][]Reader{
	"apiserver": {
		{"kube-apiserver", PicksUpItself, "--tls-cert-file is a dynamic serving certificate: the apiserver watches the file and serves the new one on new connections"},
		{"haplane join server", PicksUpItself, "the agent's join server loads the pair again when the files change (keyPairFiles)"},
	},
	"apiserver-kubelet-client": {{"kube-apiserver", PicksUpItself, "--kubelet-client-certificate is loaded again for new connections to kubelets"}},
	"front-proxy-client":       {{"kube-apiserver", PicksUpItself, "--proxy-client-cert-file is dynamic content: the file is watched"}},
	"apiserver-etcd-client":    {{"kube-apiserver", PicksUpItself, "its etcd client (etcd's transport.TLSInfo) reads the pair at each handshake"}},
	"etcd/server":              {{"etcd", PicksUpItself, "etcd's transport.TLSInfo GetCertificate reads the pair at each handshake"}},
	"etcd/peer":                {{"etcd", PicksUpItself, "etcd's transport.TLSInfo GetCertificate and GetClientCertificate read the pair at each handshake"}},
	"etcd/healthcheck-client":  {{"haplane etcd clients", PicksUpItself, "etcd's transport.TLSInfo GetClientCertificate reads the pair at each handshake"}},
	"controller-manager.conf":  {{KubeControllerManager, NeedsRestart, "the client certificate is embedded in the kubeconfig, read at start"}},
	"scheduler.conf":           {{KubeScheduler, NeedsRestart, "the client certificate is embedded in the kubeconfig, read at start"}},
	"admin.conf":               {{"kubectl", ReadsPerUse, "read by each command"}},
	"super-admin.conf":         {{"kubectl", ReadsPerUse, "read by each command"}},
}

// CertReaders returns who reads the leaf called name (a pki leaf name or
// kubeconfig file) and how each learns of a renewal.
func CertReaders(name string) []Reader { return certReaders[name] }

// restartsFor lists, in restart order, the components that must restart
// after the leaves in renewed were written.
func restartsFor(renewed []string) []string {
	var out []string
	for _, c := range []string{KubeControllerManager, KubeScheduler} {
		for _, n := range renewed {
			for _, r := range certReaders[n] {
				if r.Component == c && r.Pickup == NeedsRestart && !slices.Contains(out, c) {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// Restarter restarts a component of this node and returns once it serves
// again (or fails).
type Restarter interface {
	Restart(ctx context.Context, component string) error
}

// CertsConfig configures a CertsPart.
type CertsConfig struct {
	Node string
	// PKIDir is the node's /etc/kubernetes/pki; its kubeconfigs are in
	// the folder above, as kubeadm lays them out.
	PKIDir string
	// Plan returns the current plan (the cluster file, read at each check).
	Plan    func() (*pki.Plan, error)
	Cluster string
	// Interval between checks (default DefaultCertCheckInterval), each
	// jittered by ±10% so the nodes do not check in lockstep.
	Interval time.Duration
	// Rank is this node's place in the cluster file (0 first): node r
	// renews r intervals after a leaf enters the renewal window (see
	// pki.RenewalDelay).
	Rank int
	// Peers are join servers (host:port) asked to renew a leaf whose CA
	// key this node does not hold.
	Peers []string
	// Restarter restarts the components a renewal requires to (nil: the
	// restarts are logged and shown as pending).
	Restarter Restarter
	// Now is the clock (nil: time.Now).
	Now        func() time.Time
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// DefaultCertCheckInterval is how often the agent looks at its certificates.
const DefaultCertCheckInterval = time.Hour

// CertsPart renews this node's leaf certificates before they expire.
//
// Order across the cluster: each node renews its own leaves, node r of
// the cluster file r check intervals after node 0 (capped at half the
// renewal window). That is enough because almost every reader picks a
// renewed certificate up by itself on new connections (see certReaders),
// so a renewal on one node disturbs nothing on the others; only the
// kubeconfig-embedded certificates of kube-controller-manager and
// kube-scheduler need a restart, and those are leader-elected with a
// standby on every other node, so restarting one node's at a time keeps a
// leader. A lease in etcd would order the nodes more strictly, but would
// make renewal depend on etcd, which an etcd certificate's renewal may be
// what heals.
type CertsPart struct {
	cfg CertsConfig

	expiry   *prometheus.GaugeVec
	days     *prometheus.GaugeVec
	renewals *prometheus.CounterVec
	failing  prometheus.Gauge
	lastOK   prometheus.Gauge

	mu sync.Mutex // protects st
	st CertsStatus

	cancel context.CancelFunc
	done   chan struct{}
}

// CertsStatus is the certificate part of /status.
type CertsStatus struct {
	Certificates []CertExpiry `json:"certificates"`
	LastCheck    time.Time    `json:"lastCheck"`
	NextDue      time.Time    `json:"nextDue,omitempty"`
	LastRenewal  time.Time    `json:"lastRenewal,omitempty"`
	Renewed      []string     `json:"renewed,omitempty"` // at the last renewal
	LastError    string       `json:"lastError,omitempty"`
	// PendingRestarts are components that read a renewed certificate at
	// start only and could not be restarted by the agent.
	PendingRestarts []string `json:"pendingRestarts,omitempty"`
}

// CertExpiry is one leaf's expiry.
type CertExpiry struct {
	Name        string    `json:"name"`
	NotAfter    time.Time `json:"notAfter"`
	SecondsLeft int64     `json:"secondsLeft"`
	DaysLeft    float64   `json:"daysLeft"`
}

// NewCertsPart checks cfg and registers the part's metrics.
func NewCertsPart(cfg CertsConfig) (*CertsPart, error) {
	if cfg.Node == "" || cfg.PKIDir == "" || cfg.Plan == nil {
		return nil, errors.New("agent: certs: node, PKI folder and plan are required")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultCertCheckInterval
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("agent: certs: interval %s must be positive", cfg.Interval)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.Log = cfg.Log.With("part", "certs")
	p := &CertsPart{
		cfg: cfg,
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "haplane_cert_expiry_seconds",
			Help: "Seconds until the leaf certificate expires (negative: expired)."}, []string{"cert"}),
		days: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "haplane_cert_expiry_days",
			Help: "Days until the leaf certificate expires: haplane_cert_expiry_seconds / 86400."}, []string{"cert"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "haplane_cert_renewals_total",
			Help: "Renewals of a leaf certificate by the agent, by result (ok, error)."}, []string{"cert", "result"}),
		failing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haplane_cert_renewal_failing",
			Help: "1 when the last certificate check or renewal failed (its error is in /status), else 0."}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haplane_cert_renewal_last_success_timestamp_seconds",
			Help: "When the agent last renewed a certificate, Unix time."}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{p.expiry, p.days, p.renewals, p.failing, p.lastOK} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("agent: certs metrics: %w", err)
			}
		}
	}
	return p, nil
}

// Name implements Part.
func (p *CertsPart) Name() string { return "certs" }

// Start checks once, then every interval in the background. A failed check
// is reported in /status and the metrics, not as a failed part: the
// certificates stay valid meanwhile, and the next check tries again.
func (p *CertsPart) Start(ctx context.Context, _ func(error)) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		for {
			if err := p.Check(runCtx); err != nil && runCtx.Err() == nil {
				p.cfg.Log.Error("certificate check failed", "err", err)
			}
			// ±10% jitter.
			d := time.Duration(float64(p.cfg.Interval) * (0.9 + 0.2*rand.Float64()))
			t := time.NewTimer(d)
			select {
			case <-runCtx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// Stop ends the checks (a renewal under way finishes its file writes: the
// context ends only the waits).
func (p *CertsPart) Stop(ctx context.Context) error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status implements Statuser.
func (p *CertsPart) Status() any {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	st.Certificates = slices.Clone(st.Certificates)
	return st
}

func (p *CertsPart) root() string { return filepath.Dir(p.cfg.PKIDir) }

// Check looks at the node's leaves once and renews those that are due.
func (p *CertsPart) Check(ctx context.Context) error {
	err := p.check(ctx)
	p.mu.Lock()
	p.st.LastCheck = p.cfg.Now()
	p.st.LastError = ""
	if err != nil {
		p.st.LastError = err.Error()
	}
	p.mu.Unlock()
	if err != nil {
		p.failing.Set(1)
	} else {
		p.failing.Set(0)
	}
	return err
}

func (p *CertsPart) check(ctx context.Context) error {
	plan, err := p.cfg.Plan()
	if err != nil {
		return fmt.Errorf("certs: cluster file: %w", err)
	}
	// A leaf that cannot be read is reported; the others are still renewed.
	held, ierr := p.inventory(plan)
	if held == nil {
		return ierr
	}
	now := p.cfg.Now()
	delay := pki.RenewalDelay(p.cfg.Rank, p.cfg.Interval, plan.RenewBefore)
	due := pki.Due(held, now, plan.RenewBefore, delay)
	p.mu.Lock()
	p.st.NextDue = pki.NextDue(held, plan.RenewBefore, delay)
	p.mu.Unlock()
	if len(due) == 0 {
		return ierr
	}
	p.cfg.Log.Info("renewing certificates", "due", names(due), "renewBefore", plan.RenewBefore, "delay", delay)
	renewed, err := p.renew(ctx, plan, due, now)
	for _, h := range due {
		if slices.Contains(renewed, h.Name) {
			p.renewals.WithLabelValues(h.Name, "ok").Inc()
		} else {
			p.renewals.WithLabelValues(h.Name, "error").Inc()
		}
	}
	if len(renewed) > 0 {
		p.lastOK.Set(float64(p.cfg.Now().Unix()))
		p.mu.Lock()
		p.st.LastRenewal, p.st.Renewed = p.cfg.Now(), renewed
		p.mu.Unlock()
		p.cfg.Log.Info("certificates renewed", "renewed", renewed)
	}
	// Readers are told about what was written, even when part of the
	// batch failed.
	rerr := p.notify(ctx, renewed)
	_, ierr = p.inventory(plan)
	return oneLine(err, rerr, ierr)
}

func names(hs []pki.Held) []string {
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.Name)
	}
	return out
}

// inventory reads the node's leaves and publishes their expiry.
func (p *CertsPart) inventory(plan *pki.Plan) ([]pki.Held, error) {
	files, err := p.readLeaves(plan)
	if err != nil {
		return nil, err
	}
	held, err := pki.Inventory(plan, p.cfg.Node, files)
	now := p.cfg.Now()
	// Only leaves no longer held lose their series: a reset would leave a
	// scrape in between with none.
	p.mu.Lock()
	for _, old := range p.st.Certificates {
		if !slices.ContainsFunc(held, func(h pki.Held) bool { return h.Name == old.Name }) {
			p.expiry.DeleteLabelValues(old.Name)
			p.days.DeleteLabelValues(old.Name)
		}
	}
	p.mu.Unlock()
	var ex []CertExpiry
	for _, h := range held {
		left := h.NotAfter.Sub(now)
		p.expiry.WithLabelValues(h.Name).Set(left.Seconds())
		p.days.WithLabelValues(h.Name).Set(left.Hours() / 24)
		ex = append(ex, CertExpiry{Name: h.Name, NotAfter: h.NotAfter, SecondsLeft: int64(left / time.Second), DaysLeft: left.Hours() / 24})
	}
	p.mu.Lock()
	p.st.Certificates = ex
	p.mu.Unlock()
	if err != nil {
		return held, fmt.Errorf("certs: %w", err)
	}
	return held, nil
}

// readLeaves reads the files of the node's leaves that exist, keyed as
// pki.Inventory takes them.
func (p *CertsPart) readLeaves(plan *pki.Plan) (map[string][]byte, error) {
	specs, err := plan.Leaves(p.cfg.Node)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	var rel []string
	for _, s := range specs {
		rel = append(rel, "pki/"+s.Name+".crt")
	}
	for _, kc := range plan.Kubeconfigs(p.cfg.Node) {
		rel = append(rel, kc.File)
	}
	out := map[string][]byte{}
	for _, r := range rel {
		data, err := os.ReadFile(filepath.Join(p.root(), filepath.FromSlash(r)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		out[r] = data
	}
	return out, nil
}

// localCA loads the CA called name from the PKI folder, if its key is here.
func (p *CertsPart) localCA(name string) (pki.KeyPair, bool, error) {
	c, err := os.ReadFile(filepath.Join(p.cfg.PKIDir, name+".crt"))
	if err != nil {
		return pki.KeyPair{}, false, fmt.Errorf("certs: CA certificate %s: %w", name, err)
	}
	k, err := os.ReadFile(filepath.Join(p.cfg.PKIDir, name+".key"))
	if errors.Is(err, os.ErrNotExist) {
		return pki.KeyPair{}, false, nil
	}
	if err != nil {
		return pki.KeyPair{}, false, fmt.Errorf("certs: CA key %s: %w", name, err)
	}
	kp, err := pki.ParseKeyPair(c, k)
	if err != nil {
		return pki.KeyPair{}, false, fmt.Errorf("certs: CA %s: %w", name, err)
	}
	return kp, true, nil
}

// renew renews due, signing locally where this node holds the CA key and
// asking a peer for the rest, writes each result (the old file kept as
// .bak), and returns the names written.
func (p *CertsPart) renew(ctx context.Context, plan *pki.Plan, due []pki.Held, now time.Time) ([]string, error) {
	var written []string
	var errs []error
	remote := map[string]join.RenewInput{}
	for _, h := range due {
		ca, local, err := p.localCA(h.CA)
		if err != nil {
			errs = append(errs, fmt.Errorf("certs: renew %s: %w", h.Name, err))
			continue
		}
		if !local {
			in, err := p.renewInput(h)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			remote[h.Name] = in
			continue
		}
		if err := p.renewLocal(plan, h, ca, now); err != nil {
			errs = append(errs, err)
			continue
		}
		written = append(written, h.Name)
	}
	if len(remote) > 0 {
		w, err := p.renewRemote(ctx, plan, due, remote)
		written = append(written, w...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return written, oneLine(errs...)
}

func (p *CertsPart) path(h pki.Held) string {
	return filepath.Join(p.root(), filepath.FromSlash(h.File))
}

func (p *CertsPart) renewLocal(plan *pki.Plan, h pki.Held, ca pki.KeyPair, now time.Time) error {
	old, err := os.ReadFile(p.path(h))
	if err != nil {
		return fmt.Errorf("certs: renew %s: %w", h.Name, err)
	}
	if h.Kubeconfig {
		kc, ok := plan.KubeconfigSpecFor(p.cfg.Node, h.Name)
		if !ok {
			return fmt.Errorf("certs: renew %s: not in the plan", h.Name)
		}
		data, err := pki.RenewKubeconfig(plan, kc, old, ca, now)
		if err != nil {
			return err
		}
		return pki.WriteWithBackup(p.path(h), data, 0o600)
	}
	spec, err := plan.LeafSpecFor(p.cfg.Node, h.Name)
	if err != nil {
		return err
	}
	c, err := pki.ParseCertPEM(old)
	if err != nil {
		return fmt.Errorf("certs: renew %s: %w", h.Name, err)
	}
	nc, err := pki.Renew(spec, c, ca, now, plan.LeafValidity())
	if err != nil {
		return err
	}
	return pki.WriteWithBackup(p.path(h), pki.CertPEM(nc), 0o644)
}

// renewInput gathers what a peer needs to renew h: the certificate, its
// key (which stays here: it signs the CSR) and the CA certificate it must
// come back signed by.
func (p *CertsPart) renewInput(h pki.Held) (join.RenewInput, error) {
	data, err := os.ReadFile(p.path(h))
	if err != nil {
		return join.RenewInput{}, fmt.Errorf("certs: renew %s: %w", h.Name, err)
	}
	certPEM, keyPEM := data, []byte(nil)
	if h.Kubeconfig {
		k, err := pki.ParseKubeconfig(data)
		if err != nil {
			return join.RenewInput{}, fmt.Errorf("certs: renew %s: %w", h.Name, err)
		}
		certPEM, keyPEM = k.ClientCert, k.ClientKey
	} else if keyPEM, err = os.ReadFile(filepath.Join(p.cfg.PKIDir, filepath.FromSlash(h.Name)+".key")); err != nil {
		return join.RenewInput{}, fmt.Errorf("certs: renew %s: %w", h.Name, err)
	}
	kp, err := pki.ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		return join.RenewInput{}, fmt.Errorf("certs: renew %s: %w", h.Name, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(p.cfg.PKIDir, h.CA+".crt"))
	if err != nil {
		return join.RenewInput{}, fmt.Errorf("certs: renew %s: %w", h.Name, err)
	}
	issuer, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return join.RenewInput{}, fmt.Errorf("certs: renew %s: CA %s: %w", h.Name, h.CA, err)
	}
	return join.RenewInput{Cert: kp.Cert, Key: kp.Key, Issuer: issuer}, nil
}

// renewRemote asks the peers to renew in, then writes what came back.
func (p *CertsPart) renewRemote(ctx context.Context, plan *pki.Plan, due []pki.Held, in map[string]join.RenewInput) ([]string, error) {
	if len(p.cfg.Peers) == 0 {
		return nil, fmt.Errorf("certs: this node holds no CA key for %v and has no peer to ask", mapKeys(in))
	}
	var roots *x509.CertPool
	if data, err := os.ReadFile(filepath.Join(p.cfg.PKIDir, "ca.crt")); err == nil {
		if c, err := pki.ParseCertPEM(data); err == nil {
			roots = x509.NewCertPool()
			roots.AddCert(c)
		}
	}
	out, err := join.Renew(ctx, join.RenewOptions{Servers: p.cfg.Peers, Roots: roots, Cluster: p.cfg.Cluster, Node: p.cfg.Node, Certs: in})
	if err != nil {
		return nil, fmt.Errorf("certs: renew %v through a peer: %w", mapKeys(in), err)
	}
	var written []string
	var errs []error
	for _, h := range due {
		c, ok := out[h.Name]
		if !ok {
			continue
		}
		var data []byte
		mode := os.FileMode(0o644)
		if h.Kubeconfig {
			kc, ok := plan.KubeconfigSpecFor(p.cfg.Node, h.Name)
			if !ok {
				errs = append(errs, fmt.Errorf("certs: renew %s: not in the plan", h.Name))
				continue
			}
			old, err := os.ReadFile(p.path(h))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if data, err = pki.KubeconfigWithCert(plan, kc, old, pki.CertPEM(in[h.Name].Issuer), c); err != nil {
				errs = append(errs, err)
				continue
			}
			mode = 0o600
		} else {
			data = pki.CertPEM(c)
		}
		if err := pki.WriteWithBackup(p.path(h), data, mode); err != nil {
			errs = append(errs, err)
			continue
		}
		written = append(written, h.Name)
	}
	return written, oneLine(errs...)
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// notify restarts, one at a time and in order, the components that read a
// renewed certificate at start only; the others pick it up by themselves.
func (p *CertsPart) notify(ctx context.Context, renewed []string) error {
	var errs []error
	var pending []string
	for _, c := range restartsFor(renewed) {
		if p.cfg.Restarter == nil {
			p.cfg.Log.Warn("restart this component: it reads its renewed certificate at start only", "component", c)
			pending = append(pending, c)
			continue
		}
		if err := p.cfg.Restarter.Restart(ctx, c); errors.Is(err, ErrNotStaticPod) {
			// Run by something else (the lab, systemd): its restart is
			// whoever runs it's to do.
			p.cfg.Log.Warn("restart this component: it reads its renewed certificate at start only", "component", c, "why", err)
			pending = append(pending, c)
			continue
		} else if err != nil {
			errs = append(errs, fmt.Errorf("certs: %w", err))
			pending = append(pending, c)
			continue
		}
		p.cfg.Log.Info("restarted for its renewed certificate", "component", c)
	}
	p.mu.Lock()
	if len(renewed) > 0 || len(pending) > 0 {
		// A later renewal that needed no restart keeps earlier pending ones.
		for _, c := range pending {
			if !slices.Contains(p.st.PendingRestarts, c) {
				p.st.PendingRestarts = append(p.st.PendingRestarts, c)
			}
		}
		p.st.PendingRestarts = slices.DeleteFunc(p.st.PendingRestarts, func(c string) bool {
			return slices.Contains(restartsFor(renewed), c) && !slices.Contains(pending, c)
		})
	}
	p.mu.Unlock()
	return oneLine(errs...)
}

// oneLine joins errs like errors.Join (nil when all are nil; errors.Is and
// As see each) but on one line, "; " between them: a renewal's problems
// show in a log field, /status and `haplane status` as one line each.
func oneLine(errs ...error) error {
	var out lineErrs
	for _, e := range errs {
		if e == nil {
			continue
		}
		if le, ok := e.(lineErrs); ok {
			out = append(out, le...)
		} else {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

type lineErrs []error

func (l lineErrs) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = strings.ReplaceAll(e.Error(), "\n", "; ")
	}
	return strings.Join(s, "; ")
}

func (l lineErrs) Unwrap() []error { return l }
