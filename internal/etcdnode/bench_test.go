package etcdnode

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkPutLatency puts 256-byte values one at a time through a 3-member
// TLS cluster and reports the p50 and p99 latency of an acknowledged put.
// With HAPLANE_BENCH_ENDPOINTS (comma-separated client URLs) and
// HAPLANE_BENCH_CERT, _KEY and _CA it measures an external cluster (as
// bench/etcd.sh does); otherwise it starts three members in-process.
func BenchmarkPutLatency(b *testing.B) {
	var eps []string
	var ctls ClientTLS
	if e := os.Getenv("HAPLANE_BENCH_ENDPOINTS"); e != "" {
		eps = strings.Split(e, ",")
		ctls = ClientTLS{CertFile: os.Getenv("HAPLANE_BENCH_CERT"), KeyFile: os.Getenv("HAPLANE_BENCH_KEY"), CAFile: os.Getenv("HAPLANE_BENCH_CA")}
	} else {
		tc := newTestCluster(b, 3)
		tc.startInProcess("m0", "m1", "m2")
		eps, ctls = tc.endpoints(), tc.client
	}
	cfg, err := ctls.Config()
	if err != nil {
		b.Fatal(err)
	}
	cli, err := NewClient(eps, cfg, 2*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	val := strings.Repeat("v", 256)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "bench/warmup", val); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := cli.Put(ctx, fmt.Sprintf("bench/%08d", i%10000), val); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
