package speaker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haplane/haplane/internal/vrrp"
)

// Prometheus is Metrics as Prometheus collectors (haplane_vrrp_*).
type Prometheus struct {
	sent, received, sendFailed prometheus.Counter
	dropped                    *prometheus.CounterVec
	transitions                *prometheus.CounterVec
	state, priority            prometheus.Gauge
	failover                   *prometheus.HistogramVec
}

// NewPrometheus registers the speaker's collectors with reg.
func NewPrometheus(reg prometheus.Registerer) (*Prometheus, error) {
	p := &Prometheus{
		sent:        prometheus.NewCounter(prometheus.CounterOpts{Name: "haplane_vrrp_adverts_sent_total", Help: "VRRP advertisements sent."}),
		received:    prometheus.NewCounter(prometheus.CounterOpts{Name: "haplane_vrrp_adverts_received_total", Help: "Well-formed VRRP advertisements received."}),
		sendFailed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "haplane_vrrp_advert_send_failures_total", Help: "VRRP advertisements that could not be sent in time."}),
		dropped:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "haplane_vrrp_adverts_dropped_total", Help: "Received VRRP packets ignored, by reason."}, []string{"reason"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "haplane_vrrp_transitions_total", Help: "VRRP state transitions."}, []string{"from", "to"}),
		state:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "haplane_vrrp_state", Help: "VRRP state: 0 initialize, 1 backup, 2 master."}),
		priority:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "haplane_vrrp_priority", Help: "Current effective VRRP priority."}),
		failover: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "haplane_vrrp_failover_seconds",
			Help:    "Steps of a takeover by this node: detect (the old master's silence), take (decision to VIP added), announce (decision to first announcement).",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .2, .3, .5, 1, 2, 5},
		}, []string{"step"}),
	}
	for _, c := range []prometheus.Collector{p.sent, p.received, p.sendFailed, p.dropped, p.transitions, p.state, p.priority, p.failover} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Prometheus) AdvertSent()            { p.sent.Inc() }
func (p *Prometheus) AdvertReceived()        { p.received.Inc() }
func (p *Prometheus) AdvertDropped(r string) { p.dropped.WithLabelValues(r).Inc() }
func (p *Prometheus) SendFailed()            { p.sendFailed.Inc() }
func (p *Prometheus) Priority(prio uint8)    { p.priority.Set(float64(prio)) }
func (p *Prometheus) Transition(from, to vrrp.State) {
	p.transitions.WithLabelValues(from.String(), to.String()).Inc()
	p.state.Set(float64(to))
}

// FailoverStep implements FailoverObserver.
func (p *Prometheus) FailoverStep(step string, d time.Duration) {
	p.failover.WithLabelValues(step).Observe(d.Seconds())
}
