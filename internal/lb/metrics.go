package lb

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the load balancer's atomic counters at scrape time, so
// the data path never touches a metric.
type collector struct{ l *LB }

var (
	descHealth = prometheus.NewDesc("haplane_lb_backend_health",
		"Active-check health of a backend: 0 unknown, 1 up, 2 down, 3 live (not ready; used in panic only).", []string{"backend"}, nil)
	descUsable = prometheus.NewDesc("haplane_lb_backend_usable",
		"1 when new connections may go to the backend (not down, not suspect, in the pool).", []string{"backend"}, nil)
	descActive = prometheus.NewDesc("haplane_lb_backend_active_sessions",
		"Open sessions to a backend.", []string{"backend"}, nil)
	descTotal = prometheus.NewDesc("haplane_lb_backend_sessions_total",
		"Sessions established to a backend.", []string{"backend"}, nil)
	descFailures = prometheus.NewDesc("haplane_lb_backend_connect_failures_total",
		"Connects to a backend that failed: refused, timed out, or closed, reset or silent before answering a ClientHello.", []string{"backend"}, nil)
	descBytes = prometheus.NewDesc("haplane_lb_backend_bytes_total",
		"Bytes copied, by direction: in is client to backend, out is backend to client. Counted when a direction ends or pauses on the idle timer.",
		[]string{"backend", "direction"}, nil)
	descRetries = prometheus.NewDesc("haplane_lb_retries_total",
		"Client connections retried on another backend after a failed connect.", nil, nil)
	descReplays = prometheus.NewDesc("haplane_lb_handshake_replays_total",
		"Client connections moved to another backend, their ClientHello replayed, because the first one closed, reset or stayed silent before answering it.", nil, nil)
	descAccepted = prometheus.NewDesc("haplane_lb_accepted_total",
		"Client connections accepted on the frontends.", nil, nil)
	descNoBackend = prometheus.NewDesc("haplane_lb_no_backend_total",
		"Client connections closed because no backend accepted them.", nil, nil)
	descPanic = prometheus.NewDesc("haplane_lb_panic",
		"1 while no backend passes the readiness check and new sessions go to the live ones (panic routing).", nil, nil)
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHealth, descUsable, descActive, descTotal, descFailures, descBytes, descRetries, descReplays, descAccepted, descNoBackend, descPanic} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now().UnixNano()
	pool := *c.l.pool.Load()
	inPool := map[*Backend]bool{}
	for _, b := range pool {
		inPool[b] = true
	}
	c.l.mu.Lock()
	bs := make([]*Backend, 0, len(c.l.known))
	for _, b := range c.l.known {
		bs = append(bs, b)
	}
	c.l.mu.Unlock()
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	for _, b := range bs {
		usable := 0.0
		if inPool[b] && b.usable(now) {
			usable = 1
		}
		ch <- prometheus.MustNewConstMetric(descHealth, gauge, float64(b.health.Load()), b.addr)
		ch <- prometheus.MustNewConstMetric(descUsable, gauge, usable, b.addr)
		ch <- prometheus.MustNewConstMetric(descActive, gauge, float64(b.active.Load()), b.addr)
		ch <- prometheus.MustNewConstMetric(descTotal, counter, float64(b.total.Load()), b.addr)
		ch <- prometheus.MustNewConstMetric(descFailures, counter, float64(b.failures.Load()), b.addr)
		ch <- prometheus.MustNewConstMetric(descBytes, counter, float64(b.bytesIn.Load()), b.addr, "in")
		ch <- prometheus.MustNewConstMetric(descBytes, counter, float64(b.bytesOut.Load()), b.addr, "out")
	}
	ch <- prometheus.MustNewConstMetric(descRetries, counter, float64(c.l.retries.Load()))
	ch <- prometheus.MustNewConstMetric(descReplays, counter, float64(c.l.replays.Load()))
	ch <- prometheus.MustNewConstMetric(descAccepted, counter, float64(c.l.accepts.Load()))
	ch <- prometheus.MustNewConstMetric(descNoBackend, counter, float64(c.l.noneOK.Load()))
	panicking := 0.0
	if c.l.Panic() {
		panicking = 1
	}
	ch <- prometheus.MustNewConstMetric(descPanic, gauge, panicking)
}
