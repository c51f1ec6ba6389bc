package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"
)

// PeerWatcher reads the other control-plane nodes' agent status over
// their peer port (PeerStatusPath, mutual TLS with the cluster CA) every
// Interval. Maintenance reads it to leave the apiserver of a node in
// maintenance out of this node's pool, to see the VIP's new holder and to
// see the peers' pools drain.
type PeerWatcher struct {
	// Peers maps each other node to its status URL.
	Peers map[string]string
	// Client presents this node's client certificate of the cluster CA.
	Client *http.Client
	// Interval between reads (default 1s); each read is bounded by it.
	Interval time.Duration
	Log      *slog.Logger

	mu       sync.Mutex // protects docs and onChange
	docs     map[string]PeerDoc
	onChange func()

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// PeerDoc is what this node knows of one peer from its last read.
type PeerDoc struct {
	At          time.Time `json:"at"`
	Err         string    `json:"error,omitempty"`
	Maintenance bool      `json:"maintenance"`
	VIPState    string    `json:"vipState,omitempty"`
	HasLB       bool      `json:"-"`
	// Backends is the peer's load balancer pool.
	Backends []PeerBackend `json:"-"`
}

// PeerBackend is what a peer's /status says of one of its backends.
type PeerBackend struct {
	Addr      string `json:"addr"`
	Active    int64  `json:"active"`
	InService bool   `json:"inService"`
}

// backend reports whether addr is in the peer's pool and its sessions.
func (d PeerDoc) backend(addr string) (inService bool, active int64) {
	for _, b := range d.Backends {
		if b.Addr == addr {
			inService, active = inService || b.InService, active+b.Active
		}
	}
	return inService, active
}

type peerDocs map[string]PeerDoc

// vipMaster names a peer that reports holding the VIP ("" if none).
func (ds peerDocs) vipMaster() string {
	var names []string
	for n, d := range ds {
		if d.Err == "" && d.VIPState == "master" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// Name implements Part.
func (w *PeerWatcher) Name() string { return "peers" }

// Start reads the peers in the background.
func (w *PeerWatcher) Start(_ context.Context, _ func(error)) error {
	if w.Interval <= 0 {
		w.Interval = time.Second
	}
	if w.Log == nil {
		w.Log = slog.New(slog.DiscardHandler)
	}
	w.mu.Lock()
	if w.docs == nil {
		w.docs = map[string]PeerDoc{}
	}
	w.mu.Unlock()
	w.kick = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go w.loop(ctx)
	return nil
}

// Stop ends the reads.
func (w *PeerWatcher) Stop(ctx context.Context) error {
	if w.cancel == nil {
		return nil
	}
	w.cancel()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Refresh asks for a read now.
func (w *PeerWatcher) Refresh() {
	if w.kick == nil {
		return
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *PeerWatcher) setOnChange(f func()) {
	w.mu.Lock()
	w.onChange = f
	w.mu.Unlock()
}

func (w *PeerWatcher) loop(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		w.readAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
		}
	}
}

// readAll reads every peer at once, each bounded by Interval; a peer that
// does not answer keeps its last maintenance flag (a node rebooting for
// maintenance must not come back into the pool meanwhile).
func (w *PeerWatcher) readAll(ctx context.Context) {
	var wg sync.WaitGroup
	type got struct {
		node string
		doc  PeerDoc
	}
	out := make(chan got, len(w.Peers))
	for node, url := range w.Peers {
		wg.Go(func() { out <- got{node, w.read(ctx, url)} })
	}
	wg.Wait()
	close(out)
	changed := false
	w.mu.Lock()
	for g := range out {
		old, had := w.docs[g.node]
		if g.doc.Err != "" {
			if had && g.doc.Err != old.Err {
				w.Log.Warn("peer agent unreachable", "peer", g.node, "err", g.doc.Err)
			}
			g.doc.Maintenance = old.Maintenance
		}
		changed = changed || g.doc.Maintenance != old.Maintenance
		w.docs[g.node] = g.doc
	}
	f := w.onChange
	w.mu.Unlock()
	if changed && f != nil {
		f()
	}
}

func (w *PeerWatcher) read(ctx context.Context, url string) PeerDoc {
	ctx, cancel := context.WithTimeout(ctx, w.Interval)
	defer cancel()
	doc := PeerDoc{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err == nil {
		var resp *http.Response
		if resp, err = w.Client.Do(req); err == nil {
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s", resp.Status)
			} else {
				var st struct {
					Maintenance *MaintenanceState `json:"maintenance"`
					Parts       struct {
						VIP *struct {
							State string `json:"state"`
						} `json:"vip"`
						LB *struct {
							Backends []PeerBackend `json:"backends"`
						} `json:"lb"`
					} `json:"parts"`
				}
				if err = json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&st); err == nil {
					doc.Maintenance = st.Maintenance != nil && st.Maintenance.Active
					if st.Parts.VIP != nil {
						doc.VIPState = st.Parts.VIP.State
					}
					if st.Parts.LB != nil {
						doc.HasLB, doc.Backends = true, st.Parts.LB.Backends
					}
				}
			}
		}
	}
	doc.At = time.Now()
	if err != nil {
		doc.Err = err.Error()
	}
	return doc
}

// Docs returns the last read of every peer.
func (w *PeerWatcher) Docs() map[string]PeerDoc {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]PeerDoc, len(w.docs))
	for k, v := range w.docs {
		out[k] = v
	}
	return out
}

// fresh returns the peers read at or after since.
func (w *PeerWatcher) fresh(since time.Time) peerDocs {
	out := peerDocs{}
	for n, d := range w.Docs() {
		if !d.At.Before(since) {
			out[n] = d
		}
	}
	return out
}

// missing counts the peers not read since since.
func (w *PeerWatcher) missing(since time.Time) int {
	return len(w.Peers) - len(w.fresh(since))
}

// unreachable names the peers whose last read failed.
func (w *PeerWatcher) unreachable() []string {
	var out []string
	for n, d := range w.Docs() {
		if d.Err != "" {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Status implements Statuser.
func (w *PeerWatcher) Status() any { return w.Docs() }

// SetExcluded leaves the backends at addrs out of the pool (their nodes
// are in maintenance) and puts the others back; sessions to a backend left
// out finish on their own, new ones go elsewhere. A backend put back takes
// the checker's current verdict at once.
func (p *LBPart) SetExcluded(addrs []string) {
	p.exMu.Lock()
	defer p.exMu.Unlock()
	ex := map[string]bool{}
	for _, a := range addrs {
		ex[a] = true
	}
	if maps.Equal(ex, p.excluded) {
		return
	}
	p.excluded = ex
	p.applyPoolLocked()
}

// isExcluded reports whether addr is left out of the pool for maintenance.
func (p *LBPart) isExcluded(addr string) bool {
	p.exMu.Lock()
	defer p.exMu.Unlock()
	return p.excluded[addr]
}

// setConfigured records the cluster file's backends (at New and reload)
// and applies the exclusions to them.
func (p *LBPart) setConfigured(addrs []string) {
	p.exMu.Lock()
	defer p.exMu.Unlock()
	p.configured = slices.Clone(addrs)
	if len(p.excluded) > 0 {
		p.applyPoolLocked()
	}
}

func (p *LBPart) applyPoolLocked() {
	var pool []string
	for _, a := range p.configured {
		if !p.excluded[a] {
			pool = append(pool, a)
		}
	}
	p.lb.SetBackends(pool)
	for _, a := range pool {
		if h, ok := LBHealth(p.checker.Status(a), p.checker.Live(a)); ok {
			p.lb.SetHealth(a, h)
		}
	}
}

// backend reports whether addr is in this load balancer's pool and its
// open sessions.
func (p *LBPart) backend(addr string) (inService bool, active int64) {
	for _, b := range p.lb.Backends() {
		if b.Addr == addr {
			inService, active = inService || b.InService, active+b.Active
		}
	}
	return inService, active
}
