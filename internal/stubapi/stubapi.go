// Package stubapi is a small stand-in for kube-apiserver, for `haplane lab
// --backend stub` and tests: HTTPS on the apiserver port with /livez,
// /readyz and /healthz, and a tiny object API (POST and GET under
// /stub/objects/) whose writes go to etcd when one is given, so a write is
// acknowledged only once etcd has committed it, as with the real apiserver.
// Readiness follows etcd the same way: without a reachable etcd, /readyz
// answers 500.
package stubapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is the store behind the object API; internal/cli wires an etcd client
// in. nil keeps objects in memory and makes readiness unconditional.
type KV interface {
	Put(ctx context.Context, key, value string) error
	Get(ctx context.Context, key string) (string, bool, error)
	Healthy(ctx context.Context) error
}

// Config configures a Server.
type Config struct {
	Addr string      // listen address, e.g. 10.77.0.11:6443
	TLS  *tls.Config // serving certificate (the node's apiserver certificate)
	KV   KV
	Name string // reported in responses, e.g. the node name
	Log  *slog.Logger
}

// Server is a running stub apiserver.
type Server struct {
	cfg Config
	ln  net.Listener
	srv *http.Server
	mem sync.Map // key -> value when KV is nil
}

// Start listens and serves until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.TLS == nil {
		return nil, errors.New("stubapi: a serving certificate is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ln, err := tls.Listen("tcp", cfg.Addr, cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("stubapi: listen %s: %w", cfg.Addr, err)
	}
	s := &Server{cfg: cfg, ln: ln}
	s.srv = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Log.Error("stub apiserver stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops serving at once.
func (s *Server) Close() error { return s.srv.Close() }

// Shutdown stops accepting and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }
	mux.HandleFunc("GET /livez", ok)
	mux.HandleFunc("GET /healthz", s.ready)
	mux.HandleFunc("GET /readyz", s.ready)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"gitVersion": "stub", "node": s.cfg.Name})
	})
	mux.HandleFunc("POST /stub/objects/{name}", s.put)
	mux.HandleFunc("GET /stub/objects/{name}", s.get)
	return mux
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if s.cfg.KV != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.cfg.KV.Healthy(ctx); err != nil {
			http.Error(w, "[-]etcd failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	_, _ = io.WriteString(w, "ok")
}

const prefix = "/haplane-stub/objects/"

func (s *Server) put(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "" || strings.ContainsAny(name, "/ ") {
		http.Error(w, "bad name", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if s.cfg.KV == nil {
		s.mem.Store(name, string(body))
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.cfg.KV.Put(ctx, prefix+name, string(body)); err != nil {
			http.Error(w, "etcd: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]string{"name": name, "servedBy": s.cfg.Name})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var (
		v     string
		found bool
	)
	if s.cfg.KV == nil {
		var x any
		x, found = s.mem.Load(name)
		if found {
			v = x.(string)
		}
	} else {
		var err error
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		v, found, err = s.cfg.KV.Get(ctx, prefix+name)
		if err != nil {
			http.Error(w, "etcd: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	if !found {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	_, _ = io.WriteString(w, v)
}

// EtcdKV is the KV of a real etcd cluster.
type EtcdKV struct{ Client *clientv3.Client }

// Put writes with a linearizable commit.
func (e EtcdKV) Put(ctx context.Context, key, value string) error {
	_, err := e.Client.Put(ctx, key, value)
	return err
}

// Get reads linearizably.
func (e EtcdKV) Get(ctx context.Context, key string) (string, bool, error) {
	resp, err := e.Client.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return "", false, err
	}
	return string(resp.Kvs[0].Value), true, nil
}

// Healthy is etcd's own health verdict: a linearizable read succeeds.
func (e EtcdKV) Healthy(ctx context.Context) error {
	_, err := e.Client.Get(ctx, "health")
	return err
}
