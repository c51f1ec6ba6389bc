// Package apiservers finds a cluster's kube-apiservers from the kubernetes
// Service's EndpointSlices, which the apiservers themselves keep current
// (each one adds itself while its lease lives and removes itself when it
// stops). A worker's node-local load balancer follows this list, so adding
// or removing a control-plane node needs no edit on the workers.
//
// The pure part (FromSlices, Merge) decides what the pool becomes; the
// Watcher is the edge that reads the API.
package apiservers

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// The kubernetes Service: its EndpointSlices list the apiservers.
const (
	Namespace = metav1.NamespaceDefault
	Service   = "kubernetes"
)

// FromSlices returns the host:port of every ready endpoint in slices,
// sorted and without repeats. The port is the slice's port named "https"
// (the apiservers' secure port), else its only port; a slice without one
// contributes nothing. An endpoint whose Ready condition is unset counts
// as ready, as the EndpointSlice API says.
func FromSlices(sl []*discoveryv1.EndpointSlice) []string {
	var out []string
	for _, s := range sl {
		port, ok := slicePort(s)
		if !ok {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(port)))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func slicePort(s *discoveryv1.EndpointSlice) (int, bool) {
	var only *discoveryv1.EndpointPort
	for i, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		if p.Name != nil && *p.Name == "https" {
			return int(*p.Port), true
		}
		if len(s.Ports) == 1 {
			only = &s.Ports[i]
		}
	}
	if only != nil {
		return int(*only.Port), true
	}
	return 0, false
}

// Merge decides the pool from what was discovered and what the pool is
// now: the discovered list when it names any apiserver, else the current
// pool unchanged. An empty list is never trusted: it is what a worker sees
// when every apiserver restarted at once and none has re-added itself yet,
// and emptying the pool then would cut the node off for good (the watch
// itself goes through this pool).
func Merge(discovered, current []string) []string {
	if len(discovered) == 0 {
		return current
	}
	return discovered
}

// Watcher follows the kubernetes Service's EndpointSlices and calls
// OnChange with the new pool whenever it changes.
type Watcher struct {
	Client kubernetes.Interface
	// Bootstrap is the pool before the first list (the cluster file's
	// control-plane nodes).
	Bootstrap []string
	// OnChange receives the new pool, sorted; called from one goroutine.
	OnChange func([]string)
	Log      *slog.Logger
	// Resync re-reads the cache this often, a guard against a missed
	// event (default 5m).
	Resync time.Duration

	mu      sync.Mutex
	current []string
	synced  bool
	err     string
}

// Status is what /status shows of discovery.
type Status struct {
	Source  string   `json:"source"` // "endpointslice" once listed, else "bootstrap"
	Pool    []string `json:"pool"`
	LastErr string   `json:"lastError,omitempty"`
}

// Status reports the pool the watcher last decided.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := Status{Source: "bootstrap", Pool: slices.Sorted(slices.Values(w.Bootstrap)), LastErr: w.err}
	if w.synced {
		st.Source, st.Pool = "endpointslice", slices.Clone(w.current)
	}
	return st
}

// Run watches until ctx ends. Errors of the watch are retried by the
// informer with backoff and recorded in Status; Run returns only ctx's.
func (w *Watcher) Run(ctx context.Context) error {
	if w.Log == nil {
		w.Log = slog.New(slog.DiscardHandler)
	}
	if w.Resync == 0 {
		w.Resync = 5 * time.Minute
	}
	w.mu.Lock()
	w.current = slices.Sorted(slices.Values(w.Bootstrap))
	w.mu.Unlock()
	sel := labels.Set{discoveryv1.LabelServiceName: Service}.String()
	f := informers.NewSharedInformerFactoryWithOptions(w.Client, w.Resync,
		informers.WithNamespace(Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel }))
	inf := f.Discovery().V1().EndpointSlices()
	lister := inf.Lister()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	si := inf.Informer()
	if err := si.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		w.mu.Lock()
		w.err = err.Error()
		w.mu.Unlock()
		w.Log.Warn("apiservers: watch of the kubernetes EndpointSlices failed; keeping the pool", "err", err)
	}); err != nil {
		return fmt.Errorf("apiservers: %w", err)
	}
	if _, err := si.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    poke,
		UpdateFunc: func(_, n any) { poke(n) },
		DeleteFunc: poke,
	}); err != nil {
		return fmt.Errorf("apiservers: %w", err)
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	go func() {
		// Events of the first list may come before the cache says it is
		// synced: decide once more when it is.
		if cache.WaitForCacheSync(ctx.Done(), si.HasSynced) {
			poke(nil)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-kick:
		}
		if !si.HasSynced() {
			continue
		}
		all, err := lister.EndpointSlices(Namespace).List(labels.Everything())
		if err != nil {
			continue
		}
		w.decide(FromSlices(all))
	}
}

func (w *Watcher) decide(found []string) {
	w.mu.Lock()
	w.synced, w.err = true, ""
	next := Merge(found, w.current)
	changed := !slices.Equal(next, w.current)
	if changed {
		w.current = next
	}
	w.mu.Unlock()
	if len(found) == 0 {
		w.Log.Warn("apiservers: the kubernetes EndpointSlices list no ready apiserver; keeping the pool", "pool", next)
	}
	if changed {
		w.Log.Info("apiservers: pool", "pool", next)
		if w.OnChange != nil {
			w.OnChange(slices.Clone(next))
		}
	}
}
