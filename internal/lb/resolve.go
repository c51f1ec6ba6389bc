package lb

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Backends are usually IP literals, parsed once. A backend given by host
// name is looked up off the session path: when SetBackends adds it, and
// again every nameRefresh while the load balancer serves (every second
// while no lookup has answered), so the event loop always connects to an
// address it holds and a session never waits for the resolver. A lookup
// that fails keeps the address the last one gave: a resolver outage does
// not take a working backend away.

// resolver looks a host name up (net.Resolver.LookupNetIP).
type resolver func(ctx context.Context, network, host string) ([]netip.Addr, error)

// Lookup timing; variables so that tests can shorten them.
var (
	resolveTimeout  = 2 * time.Second
	nameRefresh     = 30 * time.Second
	unresolvedRetry = time.Second
)

var errUnresolved = errors.New("host name not resolved (yet)")

// newBackend makes the backend at addr (host:port).
func newBackend(addr string) *Backend {
	b := &Backend{addr: addr, sessions: map[*session]struct{}{}}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		b.ap.Store(&ap)
		return b
	}
	host, port, err := net.SplitHostPort(addr)
	p, perr := strconv.ParseUint(port, 10, 16)
	if err == nil && perr == nil && host != "" {
		b.host, b.port = host, uint16(p)
	}
	// Otherwise no lookup can help: every connect fails with errUnresolved.
	return b
}

// dialAddr is where a session connects to b; invalid while b is a name no
// lookup has answered.
func (b *Backend) dialAddr() netip.AddrPort {
	if p := b.ap.Load(); p != nil {
		return *p
	}
	return netip.AddrPort{}
}

// resolve looks b's name up and keeps one address, IPv4 first (as the
// net package's dialer prefers it).
func (l *LB) resolve(ctx context.Context, b *Backend) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := l.lookup(ctx, "ip", b.host)
	b.resolvedAt.Store(time.Now().UnixNano())
	if err == nil && len(ips) == 0 {
		err = errors.New("no address")
	}
	if err != nil {
		l.cfg.Logger.Warn("lb: look up backend", "backend", b.addr, "err", err)
		return
	}
	slices.SortStableFunc(ips, func(a, c netip.Addr) int {
		switch {
		case a.Unmap().Is4() == c.Unmap().Is4():
			return 0
		case a.Unmap().Is4():
			return -1
		}
		return 1
	})
	ap := netip.AddrPortFrom(ips[0].Unmap(), b.port)
	if old := b.ap.Swap(&ap); old == nil || *old != ap {
		l.cfg.Logger.Info("lb: backend address", "backend", b.addr, "addr", ap)
	}
}

// resolveAll looks up the names among bs at once, within resolveTimeout.
func (l *LB) resolveAll(bs []*Backend) {
	var wg sync.WaitGroup
	for _, b := range bs {
		if b.host != "" {
			wg.Go(func() { l.resolve(context.Background(), b) })
		}
	}
	wg.Wait()
}

// refreshNames looks the pool's names up again while l serves.
func (l *LB) refreshNames() {
	t := time.NewTicker(min(unresolvedRetry, nameRefresh))
	defer t.Stop()
	for {
		select {
		case <-l.stopped:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		var due []*Backend
		for _, b := range *l.pool.Load() {
			every := nameRefresh
			if b.ap.Load() == nil {
				every = unresolvedRetry
			}
			if b.host != "" && now-b.resolvedAt.Load() >= int64(every) {
				due = append(due, b)
			}
		}
		l.resolveAll(due)
	}
}
