package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	// Losing leadership is noticed margin before the lease can expire;
	// the command must be gone by then.
	margin, err := elect.CommandMargin(f.ttl, f.grace)
	if err != nil {
		return usageError{err}
	}
	if f.identity == "" {
		host, _ := os.Hostname()
		f.identity = host + "/" + strconv.Itoa(os.Getpid())
	}
	log := a.logger().With("lock", f.lock, "backend", f.backend)
	exitCode := 0
	work := func(lctx context.Context, t elect.Term) error {
		code, err := elect.Command{Args: args, Grace: f.grace, Log: log, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}.Run(lctx, t)
		exitCode = code
		return err
	}
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
