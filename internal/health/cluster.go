package health

import (
	"crypto/x509"

	"github.com/haplane/haplane/internal/config"
)

// ConfigFromCluster maps a validated, defaulted cluster file's
// loadBalancer.healthCheck to a CheckerConfig of HTTPS probes. roots is the
// cluster CA (nil: probes do not verify certificates).
func ConfigFromCluster(c *config.Cluster, roots *x509.CertPool) CheckerConfig {
	hc := c.LoadBalancer.HealthCheck
	live := hc.LivenessPath
	if live == "none" {
		live = ""
	}
	return CheckerConfig{
		Probe: ProbeConfig{
			Kind:         KindHTTPS,
			Path:         hc.Path,
			LivenessPath: live,
			Timeout:      hc.Timeout.Duration,
			RootCAs:      roots,
		},
		Interval: hc.Interval.Duration,
		Fall:     hc.Fall,
		Rise:     hc.Rise,
	}
}
