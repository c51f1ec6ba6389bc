package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// ErrNotStaticPod means a component has no static pod manifest on this
// node: kubelet does not run it here, so the agent cannot restart it.
var ErrNotStaticPod = errors.New("not a static pod on this node")

// StaticPods restarts kubeadm's static pods the way kubeadm's
// documentation says to after `kubeadm certs renew`: the manifest is moved
// out of kubelet's folder, the component is waited down, the manifest is
// moved back and the component waited healthy. One component at a time:
// Restart returns only once it serves again.
type StaticPods struct {
	// ManifestDir is kubelet's static pod folder (/etc/kubernetes/manifests).
	ManifestDir string
	// HoldDir keeps a manifest while its pod is down. It must not be
	// ManifestDir (kubelet reads every file there) and should be on the
	// same file system, so the moves are renames.
	HoldDir string
	// Healthz maps a component to the URL that answers 200 while it runs;
	// nil means kubeadm's: https://127.0.0.1:10257/healthz for
	// kube-controller-manager, :10259 for kube-scheduler.
	Healthz map[string]string
	// Timeout bounds each of the two waits (default 2m: kubelet looks at
	// its folder every 20s).
	Timeout time.Duration
	// Poll is the health check period (default 1s).
	Poll time.Duration
}

var kubeadmHealthz = map[string]string{
	KubeControllerManager: "https://127.0.0.1:10257/healthz",
	KubeScheduler:         "https://127.0.0.1:10259/healthz",
}

// Restart implements Restarter. The manifest is always put back, whatever
// fails and even when ctx ends: a component left without its manifest is
// a worse outage than a certificate renewed but not yet read.
func (s StaticPods) Restart(ctx context.Context, component string) (err error) {
	manifest := filepath.Join(s.ManifestDir, component+".yaml")
	if _, err := os.Stat(manifest); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotStaticPod, component, err)
	}
	hz := s.Healthz
	if hz == nil {
		hz = kubeadmHealthz
	}
	url, ok := hz[component]
	if !ok {
		return fmt.Errorf("no health URL for %s", component)
	}
	timeout, poll := s.Timeout, s.Poll
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	if poll == 0 {
		poll = time.Second
	}
	if err := os.MkdirAll(s.HoldDir, 0o700); err != nil {
		return fmt.Errorf("restart %s: %w", component, err)
	}
	held := filepath.Join(s.HoldDir, component+".yaml")
	if err := os.Rename(manifest, held); err != nil {
		return fmt.Errorf("restart %s: move its manifest out: %w", component, err)
	}
	restored := false
	restore := func() error {
		if restored {
			return nil
		}
		if err := os.Rename(held, manifest); err != nil {
			return fmt.Errorf("restart %s: PUT BACK ITS MANIFEST BY HAND (mv %s %s): %w", component, held, manifest, err)
		}
		restored = true
		return nil
	}
	defer func() { err = errors.Join(err, restore()) }()

	client := &http.Client{Timeout: poll, Transport: &http.Transport{DisableKeepAlives: true,
		// Only liveness is looked at: the components serve a self-signed
		// certificate by default.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // see above
	defer client.CloseIdleConnections()
	healthy := func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	wait := func(want bool, what string) error {
		deadline := time.Now().Add(timeout)
		for healthy() != want {
			if time.Now().After(deadline) {
				return fmt.Errorf("restart %s: not %s after %s", component, what, timeout)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("restart %s: %w", component, ctx.Err())
			case <-time.After(poll):
			}
		}
		return nil
	}
	if err := wait(false, "stopped"); err != nil {
		return err
	}
	if err := restore(); err != nil {
		return err
	}
	return wait(true, "healthy again")
}
