package elect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// KubeConfig configures an election on a Kubernetes Lease, for users who
// only have API access (the same lock kube-scheduler and
// kube-controller-manager use).
type KubeConfig struct {
	Client    kubernetes.Interface
	Namespace string // default kube-system
	Lock      string // the Lease's name
	Identity  string
	// LeaseDuration (default 15s), RenewDeadline (default 10s) and
	// RetryPeriod (default 2s) are client-go's, as in kube-scheduler.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

func (c *KubeConfig) setDefaults() {
	if c.Namespace == "" {
		c.Namespace = "kube-system"
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 15 * time.Second
	}
	if c.RenewDeadline == 0 {
		c.RenewDeadline = c.LeaseDuration * 2 / 3
	}
	if c.RetryPeriod == 0 {
		c.RetryPeriod = c.RenewDeadline / 5
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// LeadKubernetes is Lead on a Kubernetes Lease. The fencing token is the
// Lease's leaseTransitions after this candidate acquired it: it grows by
// one with every change of holder. client-go stops renewing after
// RenewDeadline and the leadership context ends then, LeaseDuration −
// RenewDeadline before another candidate may take the Lease.
func LeadKubernetes(ctx context.Context, cfg KubeConfig, work func(ctx context.Context, t Term) error) error {
	cfg.setDefaults()
	switch {
	case cfg.Client == nil:
		return errors.New("elect: a Kubernetes client is required")
	case cfg.Lock == "" || cfg.Identity == "":
		return errors.New("elect: a lock name and an identity are required")
	case cfg.RenewDeadline >= cfg.LeaseDuration || cfg.RetryPeriod >= cfg.RenewDeadline:
		return fmt.Errorf("elect: want retry period < renew deadline < lease duration, got %s, %s, %s", cfg.RetryPeriod, cfg.RenewDeadline, cfg.LeaseDuration)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Lock},
		Client:     cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
	}
	log := cfg.Log.With("lease", cfg.Namespace+"/"+cfg.Lock, "identity", cfg.Identity)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var werr error // written by the work goroutine before workDone closes
	var led atomic.Bool
	workDone := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   cfg.LeaseDuration,
		RenewDeadline:   cfg.RenewDeadline,
		RetryPeriod:     cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            cfg.Lock,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				defer close(workDone)
				led.Store(true)
				// Read the Lease through the API, not through lock.Get:
				// the lock caches the record it last saw and client-go's
				// renew loop writes that cache from its own goroutine.
				lease, err := cfg.Client.CoordinationV1().Leases(cfg.Namespace).Get(lctx, cfg.Lock, metav1.GetOptions{})
				if err == nil {
					if holder := ptrOr(lease.Spec.HolderIdentity, ""); holder != cfg.Identity {
						err = fmt.Errorf("held by %q, not by %q", holder, cfg.Identity)
					}
				}
				if err != nil {
					werr = fmt.Errorf("elect: read the lease: %w", err)
					cancel()
					return
				}
				t := Term{Token: int64(ptrOr(lease.Spec.LeaseTransitions, 0)), Identity: cfg.Identity}
				log.Info("leading", "token", t.Token)
				werr = work(lctx, t)
				// Work is done: give the lease up so the next leads now.
				cancel()
			},
			OnStoppedLeading: func() { log.Info("no longer leading") },
		},
	})
	if err != nil {
		return fmt.Errorf("elect: %w", err)
	}
	log.Info("campaigning")
	le.Run(runCtx) // returns when leadership ends or runCtx is cancelled
	lost := runCtx.Err() == nil
	if !led.Load() {
		return ctx.Err()
	}
	// client-go runs the callback in its own goroutine: wait for the work
	// (and whatever it started) to end before reporting.
	cancel()
	<-workDone
	switch {
	case lost:
		return errors.Join(ErrLost, werr)
	case werr != nil:
		return werr
	}
	return ctx.Err()
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
