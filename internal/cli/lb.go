package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/health"
	"github.com/haplane/haplane/internal/lb"
)

// lbCmd is `haplane lb`: the load balancer alone, a drop-in for haproxy.
func (a *app) lbCmd() *cobra.Command {
	return group("lb", "Run the L4 load balancer in front of every kube-apiserver (haproxy-compatible role)", a.lbRunCmd())
}

func (a *app) lbRunCmd() *cobra.Command {
	var cfgPath, listen, metricsAddr, caFile string
	var shutdownTimeout time.Duration
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Proxy the control-plane endpoint to every healthy kube-apiserver until SIGTERM",
		Long: `run listens on the cluster file's controlPlaneEndpoint (VIP:port) and spreads TCP
connections over every node's kube-apiserver, as haproxy does in the classic
recipe. Each apiserver is checked with HTTPS GET loadBalancer.healthCheck.path,
verified against the cluster CA (certificates.dir/ca.crt, or --ca) when it
exists; a backend that refuses or times out a connect is skipped at once and
the client retried on another.

The VIP frontend is bound with IP_FREEBIND, so the balancer can start before
this host holds the VIP and serves as soon as it arrives. --listen overrides
the frontend, e.g. 0.0.0.0:8443 on a host that should accept on every address.

SIGHUP reloads the cluster file: backends, algorithm, connect timeout, drain
and the health check change without dropping sessions (a new frontend needs
a restart). SIGTERM or SIGINT stops accepting and waits up to
--shutdown-timeout for open sessions before closing them.`,
		Example: `  haplane lb run --config haplane.yaml
  haplane lb run --config haplane.yaml --listen 0.0.0.0:8443 --metrics-addr 127.0.0.1:9444`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := net.SplitHostPort(metricsAddr); metricsAddr != "" && err != nil {
				return usageError{fmt.Errorf("--metrics-addr %q: %w", metricsAddr, err)}
			}
			if listen != "" {
				if _, _, err := net.SplitHostPort(listen); err != nil {
					return usageError{fmt.Errorf("--listen %q: %w", listen, err)}
				}
			}
			c, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return usageError{fmt.Errorf("--cpu-profile: %w", err)}
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return &ExitError{Code: ExitFailure, Err: err}
				}
				defer pprof.StopCPUProfile()
			}
			return a.runLB(cmd.Context(), cfgPath, c, listen, metricsAddr, caFile, shutdownTimeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "haplane.yaml", "cluster file")
	f.StringVar(&listen, "listen", "", "frontend address, overriding the VIP:port of the cluster file")
	f.StringVar(&metricsAddr, "metrics-addr", "127.0.0.1:9443", `address serving /metrics and /healthz ("" disables)`)
	f.StringVar(&caFile, "ca", "", "CA bundle verifying the apiservers (default: certificates.dir/ca.crt when present)")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long shutdown waits for open sessions")
	f.StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of the run to this file (for bench/lb.sh)")
	_ = f.MarkHidden("cpu-profile")
	return cmd
}

func (a *app) runLB(ctx context.Context, cfgPath string, c *config.Cluster, listen, metricsAddr, caFile string, shutdownTimeout time.Duration) error {
	log := a.logger().With("component", "lb")
	fail := func(err error) error { return &ExitError{Code: ExitFailure, Err: err} }
	pool, caPath, err := agent.APIServerCA(c, caFile, log)
	if err != nil {
		return fail(err)
	}
	reg := agent.NewRegistry()

	lcfg := lb.ConfigFromCluster(c, listen)
	lcfg.Logger, lcfg.Registerer = log, reg
	l, err := lb.New(lcfg)
	if err != nil {
		return usageError{err}
	}
	hcfg := health.ConfigFromCluster(c, pool)
	hcfg.Logger, hcfg.Registerer = log, reg
	hcfg.OnChange = func(ch health.Change) {
		if h, ok := agent.LBHealth(ch.To, ch.Live); ok {
			l.SetHealth(ch.Target.Addr, h)
		}
	}
	checker, err := health.NewChecker(hcfg)
	if err != nil {
		return usageError{err}
	}
	if err := checker.SetTargets(health.Targets(lcfg.Backends)); err != nil {
		return usageError{err}
	}
	if err := l.Listen(ctx); err != nil {
		return fail(err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var metricsSrv *http.Server
	if metricsAddr != "" {
		ln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			l.Shutdown(ctx)
			return fail(fmt.Errorf("lb: metrics listener: %w", err))
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			// Healthy when some backend can take a client.
			for _, b := range l.Backends() {
				if b.InService && b.Health != lb.HealthDown {
					io.WriteString(w, "ok\n")
					return
				}
			}
			http.Error(w, "no healthy backend", http.StatusServiceUnavailable)
		})
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go metricsSrv.Serve(ln)
		defer metricsSrv.Close()
	}

	checkDone := make(chan struct{})
	go func() { checker.Run(ctx); close(checkDone) }()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.reloadLB(cfgPath, listen, l, checker, pool, log)
			}
		}
	}()

	log.Info("lb: serving", "frontends", l.Addrs(), "backends", lcfg.Backends, "policy", lcfg.Policy,
		"health_path", hcfg.Probe.Path, "interval", hcfg.Interval, "ca", caPath, "metrics", metricsAddr)
	serveErr := l.Serve(ctx)
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer scancel()
	shutErr := l.Shutdown(sctx)
	<-checkDone
	if err := errors.Join(serveErr, shutErr); err != nil {
		return fail(err)
	}
	st := l.Backends()
	return a.print(st, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "lb: stopped, %d backends, every session closed cleanly\n", len(st))
		return err
	})
}

// reloadLB applies a reloaded cluster file to the running balancer and
// its checks (agent.ReloadLB): backends, algorithm, timeouts, drain and the
// health check change without dropping a session; a new frontend waits
// for a restart.
func (a *app) reloadLB(cfgPath, listen string, l *lb.LB, checker *health.Checker, roots *x509.CertPool, log *slog.Logger) {
	c, err := config.Load(cfgPath)
	if err != nil {
		log.Error("lb: reload: cluster file rejected, keeping the running configuration", "path", cfgPath, "err", err)
		return
	}
	err = agent.ReloadLB(l, checker, c, listen, roots)
	switch {
	case errors.Is(err, agent.ErrRestartNeeded):
		log.Warn("lb: reload: applied, except what takes effect on restart", "err", err)
	case err != nil:
		log.Error("lb: reload: keeping the running configuration", "err", err)
		return
	}
	log.Info("lb: reloaded", "backends", len(c.Nodes), "policy", l.Policy(), "health_interval", checker.Config().Interval)
}
