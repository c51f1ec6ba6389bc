package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/vrrp"
	"github.com/haplane/haplane/internal/vrrp/speaker"
)

// vipCmd is `haplane vip`: the VRRP speaker alone, a drop-in for keepalived.
func (a *app) vipCmd() *cobra.Command {
	return group("vip", "Hold the control plane's virtual IP with VRRP (keepalived-compatible)", a.vipRunCmd())
}

func (a *app) vipRunCmd() *cobra.Command {
	var cfgPath, node, metricsAddr string
	var nice int
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the VRRP speaker for one node until SIGTERM",
		Long: `run holds the virtual IP of the cluster file's controlPlaneEndpoint with VRRP
on behalf of --node, as keepalived would, and interoperates with keepalived
peers (same virtual router ID, version and, for VRRPv2, password). While
master it adds the address to the link and announces it with gratuitous ARP
(IPv4) or unsolicited neighbour advertisements (IPv6). SIGTERM or SIGINT
sends a priority-0 advertisement, so a backup takes over within
milliseconds, and removes the address before exiting. SIGHUP reloads the
cluster file and applies, without leaving the virtual router, this node's
priority, the advert interval, preemption, the VRRPv2 password and the
unicast peers (a master advertises the change at once); a change of VIP,
VRID, version, interface or node address is logged and waits for a restart.`,
		Example: `  haplane vip run --config haplane.yaml --node cp1`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.NoArgs(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlag("node", node); err != nil {
				return err
			}
			c, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			scfg, ifname, err := speaker.FromCluster(c, node)
			if err != nil {
				return usageError{err}
			}
			log := a.logger().With("component", "vip", "node", node)
			scfg.Logger = log
			reg := agent.NewRegistry()
			m, err := speaker.NewPrometheus(reg)
			if err != nil {
				return err
			}
			scfg.Metrics = m
			if metricsAddr != "" {
				// Not fatal: the VIP matters more than its metrics.
				if ln, err := net.Listen("tcp", metricsAddr); err != nil {
					log.Warn("no metrics listener", "addr", metricsAddr, "err", err)
				} else {
					mux := http.NewServeMux()
					mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
					srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
					go srv.Serve(ln)
					defer srv.Close()
				}
			}
			started := scfg.VRRP.Primary
			conn, err := speaker.Listen(ifname, &scfg) // IPv6: primary becomes the link-local address
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			addrs, err := speaker.LinkAddrs(ifname, scfg.VRRP.Addrs)
			if err != nil {
				conn.Close()
				return &ExitError{Code: ExitFailure, Err: err}
			}
			sp, err := speaker.New(scfg, conn, addrs)
			if err != nil {
				conn.Close()
				return usageError{err}
			}
			if nice != 0 {
				// Not fatal: without CAP_SYS_NICE the speaker still works,
				// it is only more exposed to a loaded CPU.
				if err := speaker.RaisePriority(nice); err != nil {
					log.Warn("could not raise scheduling priority", "nice", nice, "err", err)
				}
			}
			log.Info("vip speaker starting", "interface", ifname, "vip", c.ControlPlaneEndpoint.VIP,
				"vrid", scfg.VRRP.VRID, "version", scfg.VRRP.Version, "priority", scfg.VRRP.Priority,
				"interval", scfg.VRRP.AdvertInterval)
			// Registered before Run: an early SIGHUP must not kill the
			// speaker (Go's default action) instead of reloading it.
			hupCtx, stopHUP := context.WithCancel(cmd.Context())
			defer stopHUP()
			agent.OnSIGHUP(hupCtx, func() {
				reloadVIP(hupCtx, vipReload{path: cfgPath, node: node, ifname: ifname, started: started, running: scfg.VRRP.Primary}, sp, log)
			})
			if err := sp.Run(cmd.Context()); err != nil {
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("vip: %w", err)}
			}
			st := sp.Status()
			return a.print(st, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "vip: stopped (state %s)\n", st.State)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "haplane.yaml", "cluster file")
	cmd.Flags().StringVar(&node, "node", "", "this node's name in the cluster file")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "127.0.0.1:9446", `Prometheus /metrics listener (haplane_vrrp_*: adverts sent, received and dropped by reason, state, priority, failover steps); "" disables it`)
	cmd.Flags().IntVar(&nice, "nice", -10, "nice value for the speaker's threads, so a loaded CPU does not delay adverts (0 leaves it)")
	return cmd
}

// vipReload is what a reload of `vip run` compares against: the cluster
// file, the node, and the interface and primary address it started with.
type vipReload struct {
	path, node, ifname string
	// started is the node's address in the cluster file at start, running
	// the primary the speaker uses (the link-local address over IPv6).
	started, running netip.Addr
}

// reloadVIP reads the cluster file again and applies it to the running
// speaker (speaker.Speaker.Reconfigure); on any error the speaker keeps
// its running configuration.
func reloadVIP(ctx context.Context, r vipReload, sp *speaker.Speaker, log *slog.Logger) {
	c, err := config.Load(r.path)
	if err != nil {
		log.Error("reload refused: the cluster file does not validate; keeping the running configuration", "err", err)
		return
	}
	scfg, ifname, err := speaker.FromCluster(c, r.node)
	if err != nil {
		log.Error("reload refused; keeping the running configuration", "err", err)
		return
	}
	if ifname != r.ifname {
		log.Warn("reload: the VIP interface changes only with a restart; nothing applied", "interface", ifname, "running", r.ifname)
		return
	}
	if scfg.VRRP.Primary == r.started {
		// Unchanged node address: keep the primary Listen chose for it.
		scfg.VRRP.Primary = r.running
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sp.Reconfigure(rctx, scfg); err != nil {
		if errors.Is(err, vrrp.ErrRestartNeeded) {
			log.Warn("reload: these changes take effect when the speaker restarts; nothing applied", "err", err)
			return
		}
		log.Error("reload refused; keeping the running configuration", "err", err)
		return
	}
	log.Info("cluster file reloaded", "priority", scfg.VRRP.Priority, "interval", scfg.VRRP.AdvertInterval, "preempt", scfg.VRRP.Preempt, "peers", len(scfg.Peers))
}
