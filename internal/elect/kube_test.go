package elect

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/haplane/haplane/internal/testutil/kubeapi"
)

// startAPIServer runs the real kube-apiserver (see kubeapi.Start).
func startAPIServer(t *testing.T) kubernetes.Interface {
	return kubeapi.Start(t, os.Getenv(kubeapi.BinEnv)).Client
}

// TestKubernetesLease: two candidates on a Lease of a real kube-apiserver;
// exactly one leads at a time, the other takes over when the first gives
// up, and the token (leaseTransitions) grows.
func TestKubernetesLease(t *testing.T) {
	cs := startAPIServer(t)
	var leading atomic.Int32
	var mu sync.Mutex
	var terms []Term
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := LeadKubernetes(context.Background(), KubeConfig{Client: cs, Lock: "haplane-test", Identity: id,
				LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond},
				func(ctx context.Context, term Term) error {
					if n := leading.Add(1); n != 1 {
						t.Errorf("%d leaders at once", n)
					}
					mu.Lock()
					terms = append(terms, term)
					mu.Unlock()
					time.Sleep(500 * time.Millisecond)
					leading.Add(-1)
					return nil
				})
			if err != nil {
				t.Errorf("%s: %v", id, err)
			}
		}()
	}
	wg.Wait()
	if len(terms) != 2 || terms[0].Identity == terms[1].Identity || terms[1].Token <= terms[0].Token {
		t.Fatalf("terms %+v: want two leaders in turn with a growing token", terms)
	}
	lease, err := cs.CoordinationV1().Leases("kube-system").Get(context.Background(), "haplane-test", metav1GetOptions())
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.LeaseTransitions == nil || int64(*lease.Spec.LeaseTransitions) < terms[1].Token {
		t.Errorf("lease transitions %v, want ≥ %d", lease.Spec.LeaseTransitions, terms[1].Token)
	}
}

func metav1GetOptions() metav1.GetOptions { return metav1.GetOptions{} }
