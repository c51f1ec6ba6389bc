package apiservers

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/haplane/haplane/internal/testutil/kubeapi"
)

func ptr[T any](v T) *T { return &v }

func slice(name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: Namespace, Labels: map[string]string{discoveryv1.LabelServiceName: Service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func ep(ready *bool, addrs ...string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
}

var https = []discoveryv1.EndpointPort{{Name: ptr("https"), Port: ptr(int32(6443))}}

func TestFromSlices(t *testing.T) {
	for _, tc := range []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		want   []string
	}{
		{"none", nil, nil},
		{"ready and unset count, not ready does not",
			[]*discoveryv1.EndpointSlice{slice("a", https, ep(ptr(true), "10.0.0.2"), ep(nil, "10.0.0.1"), ep(ptr(false), "10.0.0.3"))},
			[]string{"10.0.0.1:6443", "10.0.0.2:6443"}},
		{"two slices, a repeat once",
			[]*discoveryv1.EndpointSlice{slice("a", https, ep(nil, "10.0.0.1")), slice("b", https, ep(nil, "10.0.0.1", "10.0.0.9"))},
			[]string{"10.0.0.1:6443", "10.0.0.9:6443"}},
		{"the https port among several",
			[]*discoveryv1.EndpointSlice{slice("a", []discoveryv1.EndpointPort{{Name: ptr("other"), Port: ptr(int32(1))}, {Name: ptr("https"), Port: ptr(int32(8443))}}, ep(nil, "10.0.0.1"))},
			[]string{"10.0.0.1:8443"}},
		{"a lone unnamed port",
			[]*discoveryv1.EndpointSlice{slice("a", []discoveryv1.EndpointPort{{Port: ptr(int32(7443))}}, ep(nil, "10.0.0.1"))},
			[]string{"10.0.0.1:7443"}},
		{"no port: nothing",
			[]*discoveryv1.EndpointSlice{slice("a", nil, ep(nil, "10.0.0.1"))},
			nil},
		{"two ports, neither https: ambiguous, nothing",
			[]*discoveryv1.EndpointSlice{slice("a", []discoveryv1.EndpointPort{{Port: ptr(int32(1))}, {Port: ptr(int32(2))}}, ep(nil, "10.0.0.1"))},
			nil},
		{"IPv6 is bracketed",
			[]*discoveryv1.EndpointSlice{slice("a", https, ep(nil, "fd00::1"))},
			[]string{"[fd00::1]:6443"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FromSlices(tc.slices); !slices.Equal(got, tc.want) {
				t.Errorf("FromSlices = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	cur := []string{"a:1", "b:1"}
	for _, tc := range []struct {
		name       string
		discovered []string
		want       []string
	}{
		{"empty keeps the pool", nil, cur},
		{"a list replaces it", []string{"c:1"}, []string{"c:1"}},
		{"a shrink is taken", []string{"a:1"}, []string{"a:1"}},
	} {
		if got := Merge(tc.discovered, cur); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Merge = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestWatcherFollowsEndpointSlices runs the watcher against a real
// kube-apiserver: the pool starts as the bootstrap list, follows the
// kubernetes Service's EndpointSlice as apiservers are added and removed,
// and stays put when the slice lists none.
func TestWatcherFollowsEndpointSlices(t *testing.T) {
	srv := kubeapi.Start(t, os.Getenv(kubeapi.BinEnv))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pools := make(chan []string, 16)
	w := &Watcher{Client: srv.Client, Bootstrap: []string{"10.77.0.11:6443"}, OnChange: func(p []string) { pools <- p }}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	if st := w.Status(); st.Source != "bootstrap" || len(st.Pool) != 1 {
		t.Errorf("before any list: %+v", st)
	}
	want := func(p ...string) {
		t.Helper()
		select {
		case got := <-pools:
			if !slices.Equal(got, p) {
				t.Fatalf("pool %v, want %v", got, p)
			}
		case <-ctx.Done():
			t.Fatalf("no pool %v before the deadline", p)
		}
	}
	es := srv.Client.DiscoveryV1().EndpointSlices(Namespace)
	s := slice(Service, https, ep(nil, "10.77.0.11", "10.77.0.12"))
	if _, err := es.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("10.77.0.11:6443", "10.77.0.12:6443")
	if st := w.Status(); st.Source != "endpointslice" || len(st.Pool) != 2 {
		t.Errorf("after a list: %+v", st)
	}
	// A third control-plane node joins.
	s.Endpoints = []discoveryv1.Endpoint{ep(nil, "10.77.0.11", "10.77.0.12", "10.77.0.13")}
	if _, err := es.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("10.77.0.11:6443", "10.77.0.12:6443", "10.77.0.13:6443")
	// One leaves.
	s, _ = es.Get(ctx, Service, metav1.GetOptions{})
	s.Endpoints = []discoveryv1.Endpoint{ep(nil, "10.77.0.12", "10.77.0.13"), ep(ptr(false), "10.77.0.11")}
	if _, err := es.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("10.77.0.12:6443", "10.77.0.13:6443")
	// Every endpoint gone: the pool stays, and an unrelated slice in the
	// namespace is not looked at.
	other := slice("other", https, ep(nil, "10.77.9.9"))
	other.Labels = map[string]string{discoveryv1.LabelServiceName: "other"}
	if _, err := es.Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := es.Delete(ctx, Service, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-pools:
		t.Fatalf("pool changed to %v with no endpoint listed", p)
	case <-time.After(2 * time.Second):
	}
	if st := w.Status(); !slices.Equal(st.Pool, []string{"10.77.0.12:6443", "10.77.0.13:6443"}) {
		t.Errorf("pool after the slice went: %v", st.Pool)
	}
	cancel()
	if err := <-done; err != context.Canceled && err != context.DeadlineExceeded {
		t.Errorf("Run: %v", err)
	}
}
