package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// K8sComponents are the Kubernetes binaries a kube lab runs.
var K8sComponents = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}

// K8sCacheDir is where tools/k8s/build.sh leaves the binaries of version:
// the user's cache directory, by version.
func K8sCacheDir(version string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("lab: no cache directory for the Kubernetes binaries: %w", err)
	}
	return filepath.Join(base, "haplane", "k8s", version), nil
}

// CheckK8sBin reports what dir lacks of K8sComponents, and that its
// kube-apiserver is version (when version is not empty).
func CheckK8sBin(dir, version string) error {
	var missing []string
	for _, b := range K8sComponents {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("lab: %s has no %s", dir, strings.Join(missing, ", "))
	}
	if version == "" {
		return nil
	}
	out, err := exec.Command(filepath.Join(dir, "kube-apiserver"), "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab: %s/kube-apiserver --version: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	if got := strings.TrimSpace(string(out)); !strings.HasSuffix(got, " "+version) {
		return fmt.Errorf("lab: %s/kube-apiserver is %q, want %s", dir, got, version)
	}
	return nil
}

// FindBuildScript looks for tools/k8s/build.sh in the folders from start up
// to the root (a checkout of haplane, where `go run ./cmd/haplane` runs).
func FindBuildScript(start string) (string, error) {
	for d := start; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "tools", "k8s", "build.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("lab: tools/k8s/build.sh not found above the current folder")
		}
	}
}

// K8sBinaries returns the folder of the Kubernetes binaries of version for
// a kube lab: the cached build when it is complete, else a new build by
// tools/k8s/build.sh from the Go module proxy (minutes the first time),
// with its progress on out.
func K8sBinaries(ctx context.Context, version string, out io.Writer) (string, error) {
	cache, err := K8sCacheDir(version)
	if err != nil {
		return "", err
	}
	if CheckK8sBin(cache, version) == nil {
		return cache, nil
	}
	wd, _ := os.Getwd()
	script, err := FindBuildScript(wd)
	if err != nil {
		return "", fmt.Errorf("%w: run the lab from a haplane checkout to build Kubernetes %s, pass --k8s-bin DIR with kube-apiserver, kube-controller-manager, kube-scheduler and kubectl, or use --backend stub", err, version)
	}
	fmt.Fprintf(out, "lab: building Kubernetes %s into %s (about 7 minutes on 2 cores the first time; later runs reuse the Go build cache)\n", version, cache)
	cmd := exec.CommandContext(ctx, "bash", append([]string{script, version}, K8sComponents...)...)
	cmd.Env = append(os.Environ(), "HAPLANE_K8S_VERBOSE=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("lab: build Kubernetes: %w", err)
	}
	// go build -v names each package as it compiles: count them, and keep
	// the last lines for an error message.
	t0, last := time.Now(), time.Now()
	n := 0
	var tail []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		n++
		tail = append(tail, line)
		if len(tail) > 20 {
			tail = tail[1:]
		}
		if time.Since(last) >= 15*time.Second {
			last = time.Now()
			fmt.Fprintf(out, "lab: building Kubernetes %s: %d packages in %s\n", version, n, time.Since(t0).Round(time.Second))
		}
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("lab: build Kubernetes %s: %w\n%s", version, err, strings.Join(tail, "\n"))
	}
	dir := strings.TrimSpace(stdout.String())
	if err := CheckK8sBin(dir, version); err != nil {
		return "", err
	}
	fmt.Fprintf(out, "lab: Kubernetes %s built in %s\n", version, time.Since(t0).Round(time.Second))
	return dir, nil
}
