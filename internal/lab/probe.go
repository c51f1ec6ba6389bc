package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/haplane/haplane/internal/agent"
	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/pki"
)

// certPool reads a PEM bundle into a pool, as the agent does.
var certPool = agent.LoadCertPool

// probeClient opens a new TLS connection for every request, as a client
// that reconnects after an outage does, so each answer tells whether the
// VIP and the load balancer route a new connection now.
func probeClient(pool *x509.CertPool, serverName string) *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName}, DisableKeepAlives: true,
	}}
}

// get asks url once: the status when it is not 200 ("" when it is) and
// the first limit bytes of the body, trimmed; err when nothing answers.
func get(client *http.Client, url string, limit int64) (status, body string, err error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", "", err
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, limit))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		status = resp.Status
	}
	return status, strings.TrimSpace(string(data)), nil
}

// WaitURL waits up to timeout until url answers 200, verified against the
// CA bundle in caFile, and returns the answer.
func WaitURL(ctx context.Context, url, caFile string, timeout time.Duration) (string, error) {
	pool, err := certPool(caFile)
	if err != nil {
		return "", err
	}
	client := probeClient(pool, "")
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		status, body, err := get(client, url, 512)
		if err == nil && status == "" {
			return body, nil
		}
		if err == nil {
			err = fmt.Errorf("%s: %s", status, body)
		}
		last = err
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("%s not ready after %s: %v", url, timeout, last)
}

// Probe waits until the client host gets 200 from /readyz through the VIP.
func (s *State) Probe(wait time.Duration) error {
	cmd := (&Host{NS: s.Prefix + "-client"}).Command(s.Binary, "lab", "probe", "--url", s.Endpoint+"/readyz", "--ca", s.CAFile(), "--timeout", wait.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// WatchResult is what `lab watch` reports.
type WatchResult struct {
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	Slow     int           `json:"slow"` // over 1s
	MaxGap   time.Duration `json:"maxGapNs"`
	Errors   []string      `json:"errors,omitempty"`
}

// Watch opens a new TLS connection to url every interval for d and
// reports the longest time without a successful answer: the client's
// view of an outage.
func Watch(url, caFile string, every, d time.Duration) (WatchResult, error) {
	var res WatchResult
	pool, err := certPool(caFile)
	if err != nil {
		return res, err
	}
	client := probeClient(pool, "")
	start := time.Now()
	lastOK := start
	for tick := time.NewTicker(every); time.Since(start) < d; <-tick.C {
		t0 := time.Now()
		status, _, err := get(client, url, 1<<20)
		if err == nil && status != "" {
			err = fmt.Errorf("%s", status)
		}
		res.Requests++
		if time.Since(t0) > time.Second {
			res.Slow++
		}
		if err != nil {
			res.Failed++
			if len(res.Errors) < 5 {
				res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", time.Since(start).Round(time.Millisecond), err))
			}
			continue
		}
		now := time.Now()
		res.MaxGap = max(res.MaxGap, now.Sub(lastOK))
		lastOK = now
	}
	res.MaxGap = max(res.MaxGap, time.Since(lastOK))
	return res, nil
}

// String is the one line `lab watch` prints.
func (r WatchResult) String() string {
	return fmt.Sprintf("%d requests, %d failed, %d slow, longest gap %s", r.Requests, r.Failed, r.Slow, r.MaxGap.Round(time.Millisecond))
}

// UpReady is all of lab up: Up, then the API through the VIP from the
// client host within wait, cluster-admin bound to admin.conf's group as
// kubeadm init does, and the view once steady (with the time it took).
// When the API does not answer it tears the lab down.
func UpReady(o Options, plan func(c *config.Cluster) *pki.Plan, wait time.Duration) (*State, View, error) {
	t0 := time.Now()
	st, err := Up(o, plan)
	if err != nil {
		return nil, View{}, err
	}
	fmt.Fprintf(o.Out, "lab: waiting for %s/readyz from the client host\n", st.Endpoint)
	if err := st.Probe(wait); err != nil {
		_ = Down(st.Dir, st.Prefix)
		return nil, View{}, fmt.Errorf("lab: the API did not answer through the VIP: %w (logs were in %s/logs; lab torn down)", err, st.Dir)
	}
	// kubeadm init binds kubeadm:cluster-admins itself; the process
	// runtime does what it would.
	if st.Backend == BackendKube && st.Runtime != RuntimeKubelet {
		if out, err := st.Kubectl("super-admin.conf", "create", "clusterrolebinding", "kubeadm:cluster-admins",
			"--clusterrole=cluster-admin", "--group=kubeadm:cluster-admins").CombinedOutput(); err != nil && !strings.Contains(string(out), "AlreadyExists") {
			_ = Down(st.Dir, st.Prefix)
			return nil, View{}, fmt.Errorf("lab: bind kubeadm:cluster-admins: %v: %s (lab torn down)", err, strings.TrimSpace(string(out)))
		}
	}
	view := st.WaitSteady(20 * time.Second)
	view.Ready = time.Since(t0).Round(time.Millisecond).String()
	return st, view, nil
}
