// Package agent is the composition root of the per-node daemon. It builds
// the parts (etcd member, load balancer, VRRP speaker, join server, ...),
// starts them in order, undoes a half-done start, stops them in reverse
// order on shutdown, and serves the local API: /healthz, /readyz, /metrics
// and /status on 127.0.0.1 and a unix socket.
//
// The parts themselves live in leaf packages; agent only wires them.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Part is one component of the agent.
type Part interface {
	// Name is short and stable: it keys /status and log lines.
	Name() string
	// Start brings the part up and returns once it is serving; long-running
	// work continues in goroutines the part owns. A part that dies later
	// reports it through fail.
	Start(ctx context.Context, fail func(error)) error
	// Stop shuts the part down within ctx's deadline.
	Stop(ctx context.Context) error
}

// Statuser is implemented by parts that report state for /status.
type Statuser interface {
	Status() any
}

// Readier is implemented by parts whose readiness /readyz reports.
type Readier interface {
	Ready() bool
}

// Config configures an Agent.
type Config struct {
	// Parts in start order; they stop in reverse order (so with
	// etcd, lb, vip the VIP is released first and etcd stops last).
	Parts []Part
	// APIAddr is the local API's TCP address (default 127.0.0.1:9444;
	// "-" disables it).
	APIAddr string
	// APISocket is the local API's unix socket; empty disables it.
	APISocket string
	// StopTimeout bounds the whole shutdown (default 30s).
	StopTimeout time.Duration
	// Registry collects the parts' metrics; nil makes a new one.
	Registry *prometheus.Registry
	Log      *slog.Logger
	// Info is static data served under "agent" in /status (node name,
	// version).
	Info map[string]string
	// Maintenance, when set, is served under "maintenance" in /status and
	// changed with POST /maintenance/{start,stop} on APISocket only.
	Maintenance *Maintenance
	// NotifySocket is systemd's notification socket (the unit's
	// NOTIFY_SOCKET, read by the command line); the agent tells it READY=1
	// once every part has started and STOPPING=1 when it shuts down.
	// Empty when not run as a Type=notify unit.
	NotifySocket string
}

// DefaultAPIPort is the local API's port on 127.0.0.1.
const DefaultAPIPort = 9444

// DefaultAPIAddr is where the local API listens by default.
const DefaultAPIAddr = "127.0.0.1:9444"

func (c *Config) setDefaults() {
	if c.APIAddr == "" {
		c.APIAddr = DefaultAPIAddr
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 30 * time.Second
	}
	if c.Registry == nil {
		c.Registry = NewRegistry()
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	names := map[string]bool{}
	for _, p := range c.Parts {
		if names[p.Name()] {
			return fmt.Errorf("agent: two parts named %q", p.Name())
		}
		names[p.Name()] = true
	}
	return nil
}

// NewRegistry returns a metrics registry with the Go runtime and process
// collectors, for the parts to register on before New.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Agent runs parts and the local API.
type Agent struct {
	cfg Config

	mu      sync.Mutex // protects started
	started []Part

	ready chan struct{} // closed when every part started

	apiAddrs chan []string // receives the API's addresses once listening
}

// New checks cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, ready: make(chan struct{}), apiAddrs: make(chan []string, 1)}, nil
}

// Registry is where parts register their collectors.
func (a *Agent) Registry() *prometheus.Registry { return a.cfg.Registry }

// Started is closed once every part is up.
func (a *Agent) Started() <-chan struct{} { return a.ready }

// Run starts every part, serves the API, and blocks until ctx is cancelled
// or a part fails; then it stops everything in reverse order. It returns
// the cause: nil after a clean, requested shutdown.
func (a *Agent) Run(ctx context.Context) error {
	log := a.cfg.Log
	failed := make(chan error, len(a.cfg.Parts)+2)
	api, err := a.serveAPI(failed)
	if err != nil {
		return err
	}
	defer api.close()
	a.apiAddrs <- api.addrs()

	for _, p := range a.cfg.Parts {
		name := p.Name()
		t0 := time.Now()
		fail := func(err error) {
			select {
			case failed <- fmt.Errorf("agent: %s failed: %w", name, err):
			default:
			}
		}
		if err := p.Start(ctx, fail); err != nil {
			err = fmt.Errorf("agent: start %s: %w", name, err)
			log.Error("start failed; undoing what started", "part", name, "err", err)
			return errors.Join(err, a.stopAll())
		}
		a.mu.Lock()
		a.started = append(a.started, p)
		a.mu.Unlock()
		log.Info("part started", "part", name, "took", time.Since(t0).Round(time.Millisecond))
	}
	close(a.ready)
	notifySystemd(a.cfg.NotifySocket, "READY=1")
	log.Info("agent ready", "parts", len(a.cfg.Parts))

	var cause error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx))
	case cause = <-failed:
		log.Error("a part failed; shutting down", "err", cause)
	}
	notifySystemd(a.cfg.NotifySocket, "STOPPING=1")
	return errors.Join(cause, a.stopAll())
}

// stopAll stops started parts in reverse order, each with what remains of
// the stop timeout.
func (a *Agent) stopAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.StopTimeout)
	defer cancel()
	a.mu.Lock()
	parts := a.started
	a.started = nil
	a.mu.Unlock()
	var errs []error
	for i := len(parts) - 1; i >= 0; i-- {
		p := parts[i]
		t0 := time.Now()
		if err := p.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("agent: stop %s: %w", p.Name(), err))
			a.cfg.Log.Error("stop failed", "part", p.Name(), "err", err)
			continue
		}
		a.cfg.Log.Info("part stopped", "part", p.Name(), "took", time.Since(t0).Round(time.Millisecond))
	}
	return errors.Join(errs...)
}

// Status is the /status document.
type Status struct {
	Agent map[string]string `json:"agent"`
	Ready bool              `json:"ready"`
	Parts map[string]any    `json:"parts"`
	// Maintenance is nil when the agent has none wired.
	Maintenance *MaintenanceState `json:"maintenance,omitempty"`
}

// Status collects every started part's status.
func (a *Agent) Status() Status {
	a.mu.Lock()
	parts := append([]Part(nil), a.started...)
	a.mu.Unlock()
	st := Status{Agent: a.cfg.Info, Ready: a.isReady(parts), Parts: map[string]any{}}
	if a.cfg.Maintenance != nil {
		ms := a.cfg.Maintenance.State()
		st.Maintenance = &ms
	}
	for _, p := range parts {
		if s, ok := p.(Statuser); ok {
			st.Parts[p.Name()] = s.Status()
		}
	}
	return st
}

func (a *Agent) isReady(parts []Part) bool {
	select {
	case <-a.ready:
	default:
		return false
	}
	for _, p := range parts {
		if r, ok := p.(Readier); ok && !r.Ready() {
			return false
		}
	}
	return true
}

type apiServer struct {
	srv *http.Server
	lns []net.Listener
}

func (s *apiServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		parts := append([]Part(nil), a.started...)
		a.mu.Unlock()
		if !a.isReady(parts) {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /maintenance/{action}", func(w http.ResponseWriter, r *http.Request) {
		// The TCP API is read-only: anyone on the host reaches it. The
		// unix socket is root's only (0600).
		if v, _ := r.Context().Value(unixConnKey{}).(bool); !v {
			a.cfg.Log.Warn("maintenance change refused: not on the agent's unix socket", "remote", r.RemoteAddr, "action", r.PathValue("action"))
			http.Error(w, "maintenance changes are served on the agent's unix socket only; the TCP API is read-only", http.StatusForbidden)
			return
		}
		if a.cfg.Maintenance == nil {
			http.Error(w, "this agent has no maintenance wired", http.StatusNotFound)
			return
		}
		a.cfg.Maintenance.ServeChange(w, r, r.PathValue("action"))
	})
	return mux
}

// unixConnKey marks, in a request's context, a request that came over the
// unix socket.
type unixConnKey struct{}

func (a *Agent) serveAPI(failed chan<- error) (*apiServer, error) {
	s := &apiServer{srv: &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			_, unix := c.(*net.UnixConn)
			return context.WithValue(ctx, unixConnKey{}, unix)
		}}}
	if a.cfg.APIAddr != "-" {
		ln, err := net.Listen("tcp", a.cfg.APIAddr)
		if err != nil {
			return nil, fmt.Errorf("agent: local API on %s: %w", a.cfg.APIAddr, err)
		}
		s.lns = append(s.lns, ln)
	}
	if a.cfg.APISocket != "" {
		_ = os.Remove(a.cfg.APISocket) // a stale socket from a crashed run
		ln, err := net.Listen("unix", a.cfg.APISocket)
		if err != nil {
			for _, l := range s.lns {
				l.Close()
			}
			return nil, fmt.Errorf("agent: local API on %s: %w", a.cfg.APISocket, err)
		}
		_ = os.Chmod(a.cfg.APISocket, 0o600)
		s.lns = append(s.lns, ln)
	}
	for _, ln := range s.lns {
		go func() {
			if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				select {
				case failed <- fmt.Errorf("agent: local API: %w", err):
				default:
				}
			}
		}()
	}
	return s, nil
}

// APIAddrs waits until the API listens and returns its addresses (useful
// with port 0).
func (a *Agent) APIAddrs(ctx context.Context) ([]string, error) {
	select {
	case addrs := <-a.apiAddrs:
		a.apiAddrs <- addrs
		return addrs, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *apiServer) addrs() []string {
	var out []string
	for _, l := range s.lns {
		out = append(out, l.Addr().String())
	}
	return out
}

// notifySystemd sends state to systemd's socket sock when run as a
// Type=notify unit.
func notifySystemd(sock, state string) {
	if sock == "" {
		return
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:] // abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte(state))
}
