package status

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/elect"
	"github.com/haplane/haplane/internal/etcdnode"
)

// Cluster gathers the etcd members and the election holders, all at
// once, each within Timeout. c is nil when the cluster file did not load
// (why says why): then only the Leases are read. The etcd client
// certificate is the one `haplane etcd` picks under pkiDir (else the
// cluster file's certificates.dir).
func Cluster(ctx context.Context, c *config.Cluster, why, pkiDir, kubeconfig string) (*Etcd, *Elections) {
	ev, el := &Etcd{Skipped: why}, &Elections{Holders: []Election{}}
	var tc *tls.Config
	var targets []etcdnode.Target
	if c != nil {
		_, targets = etcdnode.ClusterPeers(c)
		if pkiDir == "" {
			pkiDir = c.Certificates.Dir
		}
		var err error
		if tc, err = etcdnode.KubeadmClientTLS(pkiDir, etcdnode.ClientTLS{}).Config(); err != nil {
			ev.Skipped = err.Error()
		}
	}
	var etcdHolders, leases []Election
	var etcdNote, leaseNote string
	var wg sync.WaitGroup
	if ev.Skipped == "" {
		wg.Go(func() {
			p := etcdnode.NewProber(tc, Timeout, 0)
			defer p.Close()
			rep := p.Probe(ctx, targets)
			ev.Report = &rep
			for _, m := range rep.Members {
				if m.Leader {
					ev.Leader = strings.TrimPrefix(ev.Leader+"+"+m.Name, "+")
				}
			}
		})
		wg.Go(func() { etcdHolders, etcdNote = etcdElections(ctx, targets, tc) })
	} else {
		etcdNote = "etcd locks: skipped: " + ev.Skipped
	}
	wg.Go(func() { leases, leaseNote = LeaseHolders(ctx, kubeconfig) })
	wg.Wait()
	el.Holders = append(append(el.Holders, leases...), etcdHolders...)
	for _, n := range []string{leaseNote, etcdNote} {
		if n != "" {
			el.Notes = append(el.Notes, n)
		}
	}
	return ev, el
}

// etcdElections lists the holders of haplane elect locks.
func etcdElections(ctx context.Context, targets []etcdnode.Target, tc *tls.Config) ([]Election, string) {
	var eps []string
	for _, t := range targets {
		eps = append(eps, t.Endpoint)
	}
	cli, err := etcdnode.NewClient(eps, tc, Timeout)
	if err != nil {
		return nil, "etcd locks: " + err.Error()
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	hs, err := elect.Holders(ctx, cli)
	if err != nil {
		return nil, "etcd locks: " + err.Error()
	}
	var out []Election
	for _, h := range hs {
		out = append(out, Election{Backend: "etcd", Name: h.Lock, Holder: h.Identity, Token: h.Token, Candidates: h.Candidates})
	}
	return out, ""
}

// LeaseHolders reads the kube-scheduler and kube-controller-manager
// Leases with kubeconfig; the note says why they were not read.
func LeaseHolders(ctx context.Context, kubeconfig string) ([]Election, string) {
	if kubeconfig == "" {
		return nil, "kubernetes leases: skipped: no --kubeconfig"
	}
	if _, err := os.Stat(kubeconfig); err != nil {
		return nil, fmt.Sprintf("kubernetes leases: skipped: no kubeconfig %s (--kubeconfig)", kubeconfig)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, "kubernetes leases: " + err.Error()
	}
	rc.Timeout = Timeout
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, "kubernetes leases: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	var out []Election
	for _, nn := range Leases {
		ns, name, _ := strings.Cut(nn, "/")
		e := Election{Backend: "kubernetes", Name: nn}
		l, err := cs.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			e.Error = "no such Lease"
		case err != nil:
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // the URL says nothing the row does not
			}
			e.Error = err.Error()
		default:
			if l.Spec.HolderIdentity != nil {
				e.Holder = *l.Spec.HolderIdentity
			}
			if l.Spec.LeaseTransitions != nil {
				e.Token = int64(*l.Spec.LeaseTransitions)
			}
			if r := l.Spec.RenewTime; r != nil {
				t := r.Time
				e.Renewed = &t
				if d := l.Spec.LeaseDurationSeconds; d != nil {
					e.Expired = time.Since(t) > time.Duration(*d)*time.Second
				}
			}
		}
		out = append(out, e)
	}
	return out, ""
}
