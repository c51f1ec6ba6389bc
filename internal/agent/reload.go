package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/health"
	"github.com/haplane/haplane/internal/lb"
	"github.com/haplane/haplane/internal/vrrp"
	"github.com/haplane/haplane/internal/vrrp/speaker"
)

// ErrRestartNeeded marks a reload that applied what it could and names
// the changes that wait for the next start.
var ErrRestartNeeded = errors.New("restart needed")

// ReloadLB applies a reloaded cluster file to a running load balancer and
// its checker, dropping no session: backends, algorithm, connect timeout
// and drain go to l (lb.LB.Reconfigure); the health check's path,
// interval, timeout, fall and rise go to chk, every backend keeping its
// status. listen is the frontend override and roots the CA, as at start.
// A frontend change is reported with ErrRestartNeeded, the rest applied.
func ReloadLB(l *lb.LB, chk *health.Checker, c *config.Cluster, listen string, roots *x509.CertPool) error {
	hcfg := health.ConfigFromCluster(c, roots)
	// Validate both before applying either: a reload is all or nothing
	// on what it can apply.
	if _, err := health.NewChecker(hcfg); err != nil {
		return err
	}
	lcfg := lb.ConfigFromCluster(c, listen)
	var later error
	if err := l.Reconfigure(lcfg); err != nil {
		if !errors.Is(err, lb.ErrRestartNeeded) {
			return err
		}
		later = fmt.Errorf("%w: load balancer frontend (%v)", ErrRestartNeeded, err)
	}
	targets := health.Targets(lcfg.Backends)
	if err := chk.Reconfigure(hcfg); err != nil {
		return err
	}
	if err := chk.SetTargets(targets); err != nil {
		return err
	}
	return later
}

// Reload applies a reloaded cluster file (see ReloadLB). The node's own
// apiserver address, which its VIP tracks, changes only with a restart.
func (p *LBPart) Reload(c *config.Cluster, node string) error {
	n, ok := c.NodeByName(node)
	if !ok {
		return fmt.Errorf("agent: node %q is no longer in the cluster file", node)
	}
	err := ReloadLB(p.lb, p.checker, c, p.listen, p.roots)
	if err == nil || errors.Is(err, ErrRestartNeeded) {
		p.setConfigured(lb.ConfigFromCluster(c, p.listen).Backends) // nodes in maintenance stay out
	}
	if local := net.JoinHostPort(n.Address, strconv.Itoa(c.ControlPlaneEndpoint.APIServerPort)); local != p.local && (err == nil || errors.Is(err, ErrRestartNeeded)) {
		err = errors.Join(err, fmt.Errorf("%w: this node's apiserver address %s (tracked: %s)", ErrRestartNeeded, local, p.local))
	}
	return err
}

// Reload applies a reloaded cluster file to the speaker: this node's
// priority, the advert interval, preemption, the VRRPv2 password, the
// unicast peers and the VIP's address lifetime change without leaving the
// virtual router (a master
// advertises the change at once). A new VIP, VRID, version, interface or
// node address waits for a restart (ErrRestartNeeded); nothing else is
// applied then.
func (p *VIPPart) Reload(ctx context.Context, c *config.Cluster, node string) error {
	scfg, err := p.next(c, node)
	if err != nil {
		return err
	}
	p.mu.Lock()
	paused, sp := p.paused, p.sp
	p.mu.Unlock()
	if paused {
		// In maintenance no speaker runs: the speaker built when it ends
		// starts with this configuration.
		if err := p.keep(scfg); err != nil {
			return err
		}
		return nil
	}
	if err := sp.Reconfigure(ctx, scfg); err != nil {
		if errors.Is(err, vrrp.ErrRestartNeeded) {
			return fmt.Errorf("%w: %v", ErrRestartNeeded, err)
		}
		return err
	}
	return p.keep(scfg)
}

// keep records a reloaded configuration for the next speaker built, with
// the parts New added (tracks, metrics, logger); a change the running
// speaker would refuse waits for a restart as before.
func (p *VIPPart) keep(scfg speaker.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if scfg.VRRP.VRID != p.cfg.VRRP.VRID || scfg.VRRP.Version != p.cfg.VRRP.Version || !slices.Equal(scfg.VRRP.Addrs, p.cfg.VRRP.Addrs) {
		return fmt.Errorf("%w: the VIP's address, VRID or version", ErrRestartNeeded)
	}
	scfg.Tracks, scfg.Metrics, scfg.Logger = p.cfg.Tracks, p.cfg.Metrics, p.cfg.Logger
	p.cfg = scfg
	return nil
}

// next is the speaker configuration c gives node, for the running speaker:
// the same interface, and the primary it runs with when the node's
// address did not change.
func (p *VIPPart) next(c *config.Cluster, node string) (speaker.Config, error) {
	scfg, ifname, err := speaker.FromCluster(c, node)
	if err != nil {
		return speaker.Config{}, err
	}
	if ifname != p.ifname {
		return speaker.Config{}, fmt.Errorf("%w: VIP interface %s (running on %s)", ErrRestartNeeded, ifname, p.ifname)
	}
	if scfg.VRRP.Primary == p.started {
		scfg.VRRP.Primary = p.running
	}
	return scfg, nil
}

// Reloading tells systemd (Type=notify) on its socket sock (see
// Config.NotifySocket) that a reload started; call the returned function
// when it is over. systemctl reload then returns once the new
// configuration is applied, not when the signal was sent.
func Reloading(sock string) (done func()) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	notifySystemd(sock, fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
	return func() { notifySystemd(sock, "READY=1") }
}
