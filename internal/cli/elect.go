package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/haplane/haplane/internal/elect"
	"github.com/haplane/haplane/internal/etcdnode"
)

type electFlags struct {
	backend, kubeconfig, namespace string
	lock, config, pkiDir, identity string
	endpoints                      []string
	cacert, cert, key              string
	ttl, grace                     time.Duration
}

func (a *app) electCmd() *cobra.Command {
	var f electFlags
	cmd := &cobra.Command{
		Use:   "elect --lock NAME -- COMMAND [ARGS...]",
		Short: "Run a command only while this process leads an etcd election",
		Long: `elect runs COMMAND only while it holds the lock: the --leader-elect of
kube-scheduler and kube-controller-manager, for any process. The command gets
the fencing token (the election key's revision, larger for every new leader)
in HAPLANE_FENCING_TOKEN and this candidate's identity in
HAPLANE_ELECT_IDENTITY. When leadership is lost, or cannot be confirmed within
the lease, the command gets SIGTERM and, after --grace, SIGKILL, before the
lease can expire and another candidate start its copy: two copies never run at
once. If the command exits, elect resigns (the next candidate starts at once)
and exits with the command's code. If elect itself dies, the kernel kills the
command.`,
		Example: `  haplane elect --lock backup --config /etc/haplane/haplane.yaml -- /usr/local/bin/backup-loop`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runElect(cmd.Context(), &f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.lock, "lock", "", "election name (required)")
	fl.StringVar(&f.backend, "backend", "etcd", `where the lock lives: "etcd" (a lease) or "kubernetes" (a coordination.k8s.io Lease, for API-only access)`)
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig for --backend kubernetes (default: in-cluster config)")
	fl.StringVar(&f.namespace, "namespace", "kube-system", "namespace of the Lease (--backend kubernetes)")
	fl.StringVarP(&f.config, "config", "c", "", "cluster file: etcd endpoints and, from its PKI folder, the client certificate")
	fl.StringVar(&f.pkiDir, "pki-dir", "", "PKI folder (default certificates.dir of the cluster file)")
	fl.StringSliceVar(&f.endpoints, "endpoints", nil, "etcd endpoints (instead of --config)")
	fl.StringVar(&f.cacert, "cacert", "", "etcd CA (with --endpoints)")
	fl.StringVar(&f.cert, "cert", "", "etcd client certificate (with --endpoints)")
	fl.StringVar(&f.key, "key", "", "etcd client key (with --endpoints)")
	fl.StringVar(&f.identity, "identity", "", "this candidate's identity (default host name and PID)")
	fl.DurationVar(&f.ttl, "ttl", 10*time.Second, "lease TTL: how long the others wait after a leader dies without resigning")
	fl.DurationVar(&f.grace, "grace", 3*time.Second, "time between SIGTERM and SIGKILL when stopping the command; below the TTL")
	return cmd
}

func (a *app) runElect(ctx context.Context, f *electFlags, args []string) error {
	if err := requireFlag("lock", f.lock); err != nil {
		return err
	}
	if f.ttl < 2*time.Second {
		return usageError{fmt.Errorf("--ttl %s: at least 2s", f.ttl)}
	}
	// Losing leadership is noticed margin before the lease can expire;
	// the command must be gone by then.
	margin := f.grace + 500*time.Millisecond
	if margin > f.ttl/2 {
		return usageError{fmt.Errorf("--grace %s plus 500ms must be at most half of --ttl %s (the lease is renewed every third of it)", f.grace, f.ttl)}
	}
	if f.identity == "" {
		host, _ := os.Hostname()
		f.identity = host + "/" + strconv.Itoa(os.Getpid())
	}
	log := a.logger().With("lock", f.lock, "backend", f.backend)
	exitCode := 0
	work := func(lctx context.Context, t elect.Term) error {
		code, err := runWhileLeading(lctx, args, t, f.grace, log)
		exitCode = code
		return err
	}
	var err error
	switch f.backend {
	case "etcd":
		endpoints, tc, cerr := a.etcdClientFlags(f)
		if cerr != nil {
			return cerr
		}
		cli, cerr := etcdnode.NewClient(endpoints, tc, 3*time.Second)
		if cerr != nil {
			return cerr
		}
		defer cli.Close()
		err = elect.Lead(ctx, elect.Config{Client: cli, Lock: f.lock, Identity: f.identity, TTL: f.ttl, Margin: margin, Log: log}, work)
	case "kubernetes":
		rc, cerr := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
		if cerr != nil {
			return usageError{fmt.Errorf("--kubeconfig: %w", cerr)}
		}
		cs, cerr := kubernetes.NewForConfig(rc)
		if cerr != nil {
			return cerr
		}
		// Renewal stops margin before the Lease can be taken by another.
		renew := f.ttl - margin
		err = elect.LeadKubernetes(ctx, elect.KubeConfig{Client: cs, Namespace: f.namespace, Lock: f.lock, Identity: f.identity,
			LeaseDuration: f.ttl, RenewDeadline: renew, RetryPeriod: renew / 4, Log: log}, work)
	default:
		return usageError{fmt.Errorf("--backend %q: etcd or kubernetes", f.backend)}
	}
	switch {
	case errors.Is(err, elect.ErrLost):
		return &ExitError{Code: ExitFailure, Err: err}
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return nil // SIGTERM/SIGINT: the command was stopped, we resigned
	case err != nil:
		return &ExitError{Code: ExitFailure, Err: err}
	}
	if exitCode != 0 {
		return &ExitError{Code: exitCode}
	}
	return nil
}

// etcdClientFlags resolves the etcd connection from --config or explicit
// flags; without certificates it connects in plain text.
func (a *app) etcdClientFlags(f *electFlags) ([]string, *tls.Config, error) {
	if len(f.endpoints) > 0 {
		if f.cert == "" && f.key == "" && f.cacert == "" {
			return f.endpoints, nil, nil
		}
		tc, err := etcdnode.ClientTLS{CertFile: f.cert, KeyFile: f.key, CAFile: f.cacert}.Config()
		return f.endpoints, tc, err
	}
	if f.config == "" {
		return nil, nil, usageError{errors.New("give --config or --endpoints")}
	}
	c, err := a.loadConfig(f.config)
	if err != nil {
		return nil, nil, err
	}
	pkiDir := f.pkiDir
	if pkiDir == "" {
		pkiDir = c.Certificates.Dir
	}
	var eps []string
	for _, m := range c.EtcdMembers() {
		eps = append(eps, etcdnode.ClientURLFor(m.Address, c.Etcd.ClientPort))
	}
	tc, err := etcdnode.ClientTLS{
		CertFile: filepath.Join(pkiDir, "apiserver-etcd-client.crt"),
		KeyFile:  filepath.Join(pkiDir, "apiserver-etcd-client.key"),
		CAFile:   filepath.Join(pkiDir, "etcd", "ca.crt"),
	}.Config()
	return eps, tc, err
}

// runWhileLeading runs the command until it exits or ctx ends; then it
// stops it: SIGTERM to its process group, SIGKILL after grace.
func runWhileLeading(ctx context.Context, args []string, t elect.Term, grace time.Duration, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) (int, error) {
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	started := make(chan *exec.Cmd, 1)
	go func() {
		// Pdeathsig is tied to the thread that started the child: keep
		// this goroutine on its thread for the child's whole life, so the
		// kernel kills the command if elect dies.
		runtime.LockOSThread()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), "HAPLANE_FENCING_TOKEN="+strconv.FormatInt(t.Token, 10), "HAPLANE_ELECT_IDENTITY="+t.Identity)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- nil
			done <- result{code: 127, err: fmt.Errorf("elect: start %s: %w", args[0], err)}
			return
		}
		started <- cmd
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code, err = ee.ExitCode(), nil
			if code < 0 {
				code = 128 + int(syscall.SIGKILL)
			}
		}
		done <- result{code: code, err: err}
	}()
	cmd := <-started
	if cmd == nil {
		r := <-done
		return r.code, r.err
	}
	log.Info("command started", "pid", cmd.Process.Pid, "token", t.Token)
	select {
	case r := <-done:
		log.Info("command exited", "code", r.code)
		return r.code, r.err
	case <-ctx.Done():
	}
	log.Warn("stopping the command", "pid", cmd.Process.Pid, "why", context.Cause(ctx))
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case r := <-done:
		return r.code, context.Cause(ctx)
	case <-time.After(grace):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	r := <-done
	return r.code, context.Cause(ctx)
}
