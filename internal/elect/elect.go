// Package elect is leader election on etcd leases: exactly one holder of a
// lock at a time, with a fencing token that grows with every new leader. It
// is the seed's `--leader-elect` active-standby for any process.
//
// A leader learns it lost leadership from its own lease bookkeeping, not
// from etcd: when no keep-alive was acknowledged for TTL minus a safety
// margin, the leadership context is cancelled, early enough that the leader
// can stop its work before the lease expires on the server and another
// candidate can win.
package elect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Prefix is where election keys live in etcd.
const Prefix = "/haplane/elect/"

// Config configures an Elector.
type Config struct {
	Client *clientv3.Client
	// Lock names the election; candidates of the same lock exclude each
	// other.
	Lock string
	// Identity is what this candidate publishes as leader (default: the
	// host name and PID, set by the caller).
	Identity string
	// TTL is the lease's time to live (default 10s, at least 2s): how long
	// the others wait after a leader dies without resigning.
	TTL time.Duration
	// Margin is how long before the lease could expire a leader that
	// cannot renew gives up (default TTL/3). A caller that must stop work
	// after losing leadership needs that work stopped within Margin.
	Margin time.Duration
	Log    *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.TTL == 0 {
		c.TTL = 10 * time.Second
	}
	if c.Margin == 0 {
		c.Margin = c.TTL / 3
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	switch {
	case c.Client == nil:
		return errors.New("elect: an etcd client is required")
	case c.Lock == "":
		return errors.New("elect: a lock name is required")
	case c.Identity == "":
		return errors.New("elect: an identity is required")
	case c.TTL < 2*time.Second:
		return fmt.Errorf("elect: ttl %s is below 2s", c.TTL)
	case c.Margin <= 0 || c.Margin > c.TTL/2:
		// Keep-alives go out every TTL/3; a watchdog firing sooner than
		// TTL/2 after the last one would give up a healthy lease.
		return fmt.Errorf("elect: margin %s must be positive and at most half the ttl %s", c.Margin, c.TTL)
	}
	return nil
}

// Term is one period of leadership.
type Term struct {
	// Token is the fencing token: the election key's create revision,
	// strictly greater for every later leader of the same lock.
	Token int64
	// Identity is this leader's identity.
	Identity string
}

// ErrLost is the cause of a leadership context cancelled because the lease
// could not be renewed in time.
var ErrLost = errors.New("elect: leadership lost (lease not renewed in time)")

// Lead campaigns for the lock and, once leader, calls work with a context
// that is cancelled (cause ErrLost) the moment leadership is lost or cannot
// be confirmed. When work returns, Lead resigns, so the next candidate
// leads at once, and returns work's error. Lead returns ctx's error if ctx
// ends first (resigning if it led).
func Lead(ctx context.Context, cfg Config, work func(ctx context.Context, t Term) error) error {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	log := cfg.Log.With("lock", cfg.Lock, "identity", cfg.Identity)
	ttlSec := int64((cfg.TTL + time.Second - 1) / time.Second)
	grant, err := cfg.Client.Grant(ctx, ttlSec)
	if err != nil {
		return fmt.Errorf("elect: grant lease: %w", err)
	}
	lease := grant.ID
	// revoke ends the lease so a successor need not wait for its expiry.
	revoke := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if _, err := cfg.Client.Revoke(rctx, lease); err != nil {
			log.Debug("revoke lease", "err", err)
		}
	}
	kaCtx, stopKA := context.WithCancel(ctx)
	defer stopKA()
	ka, err := cfg.Client.KeepAlive(kaCtx, lease)
	if err != nil {
		revoke()
		return fmt.Errorf("elect: keep lease alive: %w", err)
	}
	// renewed holds the time the lease was last confirmed; its expiry on
	// the server is no earlier than renewed + TTL.
	var mu sync.Mutex
	renewed := cfg.Now()
	go func() {
		for range ka {
			mu.Lock()
			renewed = cfg.Now()
			mu.Unlock()
		}
	}()
	lastRenewed := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return renewed
	}

	sess, err := concurrency.NewSession(cfg.Client, concurrency.WithLease(lease), concurrency.WithContext(ctx))
	if err != nil {
		revoke()
		return fmt.Errorf("elect: session: %w", err)
	}
	e := concurrency.NewElection(sess, Prefix+cfg.Lock)
	log.Info("campaigning")
	if err := e.Campaign(ctx, cfg.Identity); err != nil {
		revoke()
		return fmt.Errorf("elect: campaign: %w", err)
	}
	term := Term{Token: e.Rev(), Identity: cfg.Identity}
	log.Info("leading", "token", term.Token)

	leadCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The watchdog: leadership is only as good as the last renewal.
	go func() {
		tick := time.NewTicker(min(cfg.Margin/4, 250*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-leadCtx.Done():
				return
			case <-tick.C:
				if cfg.Now().Sub(lastRenewed()) > cfg.TTL-cfg.Margin {
					log.Warn("lease not renewed in time; giving up leadership", "lastRenewed", lastRenewed())
					cancel(ErrLost)
					return
				}
			}
		}
	}()
	werr := work(leadCtx, term)
	lost := errors.Is(context.Cause(leadCtx), ErrLost)
	cancel(nil)
	// Resign and end the lease either way: the successor starts at once.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	if err := e.Resign(rctx); err != nil {
		log.Debug("resign", "err", err)
	}
	rcancel()
	revoke()
	log.Info("no longer leading", "token", term.Token, "lost", lost)
	switch {
	case lost:
		return errors.Join(ErrLost, werr)
	case werr != nil:
		return werr
	default:
		return ctx.Err()
	}
}

// Leader returns the current leader's identity and token for lock, or
// empty when nobody leads.
func Leader(ctx context.Context, cli *clientv3.Client, lock string) (string, int64, error) {
	resp, err := cli.Get(ctx, Prefix+lock+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", 0, fmt.Errorf("elect: leader of %s: %w", lock, err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, nil
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision, nil
}
