package lab

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// ObserveConfig is what the client host watches during a scenario.
type ObserveConfig struct {
	// Endpoint is the VIP's URL (https://VIP:port); CAFile verifies it.
	Endpoint string
	CAFile   string
	// ProbePath is fetched with a new TLS connection every Every
	// (default /readyz every 10ms).
	ProbePath string
	Every     time.Duration
	// AlsoPaths are probed too, each the same way but every AlsoEvery
	// (default 2*Every), and summarized apart.
	AlsoPaths []string
	// AlsoEvery paces AlsoPaths and the LocalEndpoint's probes. Every
	// probe is a full TLS handshake at an apiserver: at 10ms on three
	// streams, a 2-core lab host spends its CPU on the measurement
	// itself once etcd's quorum is gone and the apiservers work harder
	// (accept queues of 1000, connects waiting seconds, the /livez gap
	// the measurement was meant to show turned into its own artifact).
	// Two streams' worth in total keeps the load the lab was tuned at.
	AlsoEvery time.Duration
	// LocalEndpoint, when set, is a node-local load balancer on the
	// client host (haplane agent --role worker): ProbePath is probed
	// through it too, the same way, verifying the apiservers' certificate
	// for ServerName (the VIP), and summarized apart.
	LocalEndpoint string
	// ServerName is the name the probes verify (default: the endpoint's
	// host).
	ServerName string
	// T0 is the scenario's start: every time in the Observation is since
	// T0. For is how long to probe and write.
	T0  time.Time
	For time.Duration
	// Kubeconfig (the kube backend) makes the writer create ConfigMaps and
	// the watcher follow the leader Leases; without it the writer posts to
	// the stub's object API.
	Kubeconfig string
	// Run names this run's objects, so a later read finds exactly them.
	Run string
	// WriteEvery is the writer's pace (default 100ms); Recover bounds how
	// long the read-back waits for the cluster to answer again (default
	// 90s).
	WriteEvery time.Duration
	Recover    time.Duration
}

// LeaderLeases are the Leases kube-scheduler and kube-controller-manager
// elect their leader on.
var LeaderLeases = []string{"kube-controller-manager", "kube-scheduler"}

// Observe probes, writes and follows the leader Leases from the client
// host for cfg.For, then reads every acknowledged write back.
func Observe(ctx context.Context, cfg ObserveConfig) (*Observation, error) {
	if cfg.ProbePath == "" {
		cfg.ProbePath = "/readyz"
	}
	if cfg.Every == 0 {
		cfg.Every = 10 * time.Millisecond
	}
	if cfg.AlsoEvery == 0 {
		cfg.AlsoEvery = 2 * cfg.Every
	}
	if cfg.WriteEvery == 0 {
		cfg.WriteEvery = 100 * time.Millisecond
	}
	if cfg.Recover == 0 {
		cfg.Recover = 90 * time.Second
	}
	if cfg.T0.IsZero() {
		cfg.T0 = time.Now()
	}
	if cfg.Run == "" {
		cfg.Run = fmt.Sprintf("r%d", time.Now().UnixNano())
	}
	pool, err := certPool(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("lab: observe: %w", err)
	}
	var w writer
	if cfg.Kubeconfig != "" {
		kw, err := newKubeWriter(cfg)
		if err != nil {
			return nil, err
		}
		w = kw
	} else {
		w = &stubWriter{base: cfg.Endpoint, run: cfg.Run, client: &http.Client{Timeout: 2 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
	}

	obs := &Observation{}
	end := cfg.T0.Add(cfg.For)
	var wg sync.WaitGroup
	var acked []string
	wg.Add(2)
	go func() { defer wg.Done(); obs.Samples = probe(ctx, cfg, pool, end) }()
	obs.Also = make([]PathObservation, len(cfg.AlsoPaths))
	for i, p := range cfg.AlsoPaths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cfg
			c.ProbePath, c.Every = p, cfg.AlsoEvery
			obs.Also[i] = PathObservation{Path: p, Samples: probe(ctx, c, pool, end)}
		}()
	}
	if cfg.LocalEndpoint != "" {
		obs.Also = append(obs.Also, PathObservation{Path: cfg.ProbePath, Endpoint: cfg.LocalEndpoint})
		i := len(obs.Also) - 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cfg
			c.Endpoint, c.Every = cfg.LocalEndpoint, cfg.AlsoEvery
			if c.ServerName == "" {
				if u, err := url.Parse(cfg.Endpoint); err == nil {
					c.ServerName = u.Hostname()
				}
			}
			obs.Also[i].Samples = probe(ctx, c, pool, end)
		}()
	}
	go func() {
		defer wg.Done()
		for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
			t := time.Now()
			name := fmt.Sprintf("chaos-%s-%d", cfg.Run, i)
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := w.create(wctx, name)
			cancel()
			if err == nil {
				acked = append(acked, name)
				obs.Acked = append(obs.Acked, Mark{At: time.Since(cfg.T0), Value: name})
			} else {
				obs.WriteErrors++
			}
			time.Sleep(max(0, cfg.WriteEvery-time.Since(t)))
		}
	}()
	if kw, ok := w.(*kubeWriter); ok {
		wg.Add(1)
		go func() { defer wg.Done(); obs.Leases = kw.followLeases(ctx, cfg.T0, end) }()
	}
	wg.Wait()
	summarize(obs, cfg.T0, end)
	for i := range obs.Also {
		a := &obs.Also[i]
		o := Observation{Samples: a.Samples}
		summarize(&o, cfg.T0, end)
		a.Requests, a.Failed, a.Slow, a.MaxGap = o.Requests, o.Failed, o.Slow, o.MaxGap
	}

	// Read back: every acknowledged write must be there once the cluster
	// answers again.
	obs.Writes = len(acked)
	rctx, cancel := context.WithTimeout(ctx, cfg.Recover)
	defer cancel()
	found, err := w.readBack(rctx, acked)
	if err != nil {
		return obs, fmt.Errorf("lab: observe: read back %d writes: %w", len(acked), err)
	}
	for _, n := range acked {
		if !found[n] {
			obs.Lost++
		}
	}
	return obs, nil
}

// probe opens a new TLS connection to the VIP every cfg.Every until end,
// without waiting for the previous one: a request that hangs (a backend
// that accepts and never answers) is counted slow or failed, and does not
// hide the answers of those after it. At most 2s/Every are in flight.
func probe(ctx context.Context, cfg ObserveConfig, pool *x509.CertPool, end time.Time) []Sample {
	client := probeClient(pool, cfg.ServerName)
	var mu sync.Mutex // protects out
	var out []Sample
	var wg sync.WaitGroup
	tick := time.NewTicker(cfg.Every)
	defer tick.Stop()
	for time.Now().Before(end) && ctx.Err() == nil {
		wg.Add(1)
		go func(t time.Time) {
			defer wg.Done()
			s := Sample{At: t.Sub(cfg.T0)}
			resp, err := client.Get(cfg.Endpoint + cfg.ProbePath)
			if err == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = errors.New(resp.Status)
				}
			}
			s.Latency = time.Since(t)
			s.OK = err == nil
			if err != nil {
				s.Err = err.Error()
			}
			mu.Lock()
			out = append(out, s)
			mu.Unlock()
		}(time.Now())
		<-tick.C
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b Sample) int { return cmp.Compare(a.At, b.At) })
	return out
}

// summarize fills the probe totals. The longest gap is the longest time
// in which no probe got an answer: between two successive successful
// answers, or from a window edge to the nearest one.
func summarize(o *Observation, t0, end time.Time) {
	var done []time.Duration
	for _, s := range o.Samples {
		o.Requests++
		if s.Latency > time.Second {
			o.Slow++
		}
		if !s.OK {
			o.Failed++
			continue
		}
		done = append(done, s.At+s.Latency)
	}
	slices.Sort(done)
	last := time.Duration(0)
	for _, d := range done {
		o.MaxGap = max(o.MaxGap, d-last)
		last = d
	}
	o.MaxGap = max(o.MaxGap, end.Sub(t0)-last)
}

// writer creates objects through the VIP and reads them back.
type writer interface {
	create(ctx context.Context, name string) error
	readBack(ctx context.Context, names []string) (map[string]bool, error)
}

type stubWriter struct {
	base, run string
	client    *http.Client
}

func (s *stubWriter) create(ctx context.Context, name string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/stub/objects/"+name, bytes.NewReader([]byte(name)))
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return errors.New(resp.Status)
	}
	return nil
}

func (s *stubWriter) readBack(ctx context.Context, names []string) (map[string]bool, error) {
	found := map[string]bool{}
	for _, n := range names {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/stub/objects/"+n, nil)
			resp, err := s.client.Do(req)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					found[n] = string(body) == n
					break
				}
				if resp.StatusCode == http.StatusNotFound {
					break // answered: not there
				}
			}
			select {
			case <-ctx.Done():
				return found, ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return found, nil
}

type kubeWriter struct {
	cs  kubernetes.Interface
	run string
}

func newKubeWriter(cfg ObserveConfig) (*kubeWriter, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("lab: observe: %w", err)
	}
	rc.Timeout = 2 * time.Second
	// A fresh connection per burst would hide nothing: client-go keeps one
	// HTTP/2 connection, which a VIP move breaks, as it would a real
	// controller's.
	rc.QPS, rc.Burst = 100, 100
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("lab: observe: %w", err)
	}
	return &kubeWriter{cs: cs, run: cfg.Run}, nil
}

func (k *kubeWriter) create(ctx context.Context, name string) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"haplane.dev/chaos-run": k.run}},
		Data: map[string]string{"name": name}}
	_, err := k.cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
	return err
}

func (k *kubeWriter) readBack(ctx context.Context, names []string) (map[string]bool, error) {
	for {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		list, err := k.cs.CoreV1().ConfigMaps("default").List(lctx, metav1.ListOptions{LabelSelector: "haplane.dev/chaos-run=" + k.run})
		cancel()
		if err == nil {
			found := map[string]bool{}
			for _, cm := range list.Items {
				found[cm.Name] = cm.Data["name"] == cm.Name
			}
			return found, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// followLeases records the holder of each leader Lease every 200ms.
func (k *kubeWriter) followLeases(ctx context.Context, t0, end time.Time) map[string][]Mark {
	out := map[string][]Mark{}
	for time.Now().Before(end) && ctx.Err() == nil {
		for _, name := range LeaderLeases {
			gctx, cancel := context.WithTimeout(ctx, time.Second)
			l, err := k.cs.CoordinationV1().Leases("kube-system").Get(gctx, name, metav1.GetOptions{})
			cancel()
			var holder string
			switch {
			case err == nil && l.Spec.HolderIdentity != nil:
				holder = *l.Spec.HolderIdentity
			case err == nil || apierrors.IsNotFound(err):
				holder = "nobody"
			default:
				continue // unknown: keep the last value
			}
			if m := out[name]; len(m) == 0 || m[len(m)-1].Value != holder {
				out[name] = append(m, Mark{At: time.Since(t0), Value: holder})
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return out
}

// HolderHost is the host part of a Lease holder identity: kube-scheduler
// and kube-controller-manager use HOSTNAME_UUID.
func HolderHost(identity string) string {
	h, _, _ := strings.Cut(identity, "_")
	return h
}
