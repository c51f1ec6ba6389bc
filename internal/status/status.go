// Package status owns what `haplane status` gathers: an agent's /status
// document fetched over its unix socket, its TCP API or another node's
// peer port, this host's certificate expiry, and the cluster-wide
// sections (the etcd members as `haplane etcd status` probes them, and the
// holders of the Kubernetes Leases and haplane elect locks). The CLI only
// prints what it returns, so a library user or a test gets the same view
// without the command line.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/pki"
)

// Timeout bounds each cluster-wide section, so the screen stays fast when
// etcd or the API server is down.
const Timeout = 2 * time.Second

// DefaultKubeconfig is where kubeadm leaves the admin kubeconfig.
const DefaultKubeconfig = "/etc/kubernetes/admin.conf"

// Leases are the leader-election Leases the elections section shows.
var Leases = []string{"kube-system/kube-scheduler", "kube-system/kube-controller-manager"}

// View is this node's status: the agent's /status, the certificate
// expiry of this host, and the cluster's etcd members and election
// holders.
type View struct {
	Agent        json.RawMessage  `json:"agent"`
	Certificates []pki.CertStatus `json:"certificates,omitempty"`
	Etcd         *Etcd            `json:"etcd,omitempty"`
	Elections    *Elections       `json:"elections,omitempty"`
}

// Etcd is the etcd section: every member as `haplane etcd status` probes
// it. Report is nil when the section was skipped.
type Etcd struct {
	// Skipped says why the members were not asked.
	Skipped string `json:"skipped,omitempty"`
	// Leader names the member that reports itself leader ("" when none;
	// several joined by "+" while a partition lasts).
	Leader string `json:"leader,omitempty"`
	*etcdnode.Report
}

// Election is the holder of one election.
type Election struct {
	// Backend is "kubernetes" (a coordination.k8s.io Lease) or "etcd" (a
	// haplane elect lock).
	Backend string `json:"backend"`
	// Name is the Lease as namespace/name, or the lock.
	Name string `json:"name"`
	// Holder is the leader's identity ("" when nobody holds it).
	Holder string `json:"holder"`
	// Token is the fencing token: the Lease's leaseTransitions, or the
	// leader key's create revision.
	Token int64 `json:"token"`
	// Renewed is a Lease's renewTime; Expired says it is older than the
	// Lease's duration (the holder is gone or cannot reach the API).
	Renewed *time.Time `json:"renewed,omitempty"`
	Expired bool       `json:"expired,omitempty"`
	// Candidates counts an etcd lock's campaigning keys, the leader's
	// included.
	Candidates int    `json:"candidates,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Elections is the elections section.
type Elections struct {
	Holders []Election `json:"holders"`
	// Notes says, one line each, which backend was skipped or failed.
	Notes []string `json:"notes,omitempty"`
}

// maxDocument bounds an agent's /status document.
const maxDocument = 4 << 20

// FetchAgent reads this node's agent's /status over its unix socket sock,
// else its local API addr.
func FetchAgent(ctx context.Context, addr, sock string) ([]byte, error) {
	tr := &http.Transport{}
	if sock != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}
		addr = "agent"
	}
	return Fetch(ctx, &http.Client{Timeout: 3 * time.Second, Transport: tr}, "http://"+addr+"/status")
}

// Fetch GETs one status document with client; anything but 200 OK is an
// error.
func Fetch(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxDocument))
}

// HostCertificates is the expiry of the PKI folder's certificates and of
// the kubeconfigs beside it, warning within 30 days; nil when the folder
// does not read or holds nothing.
func HostCertificates(pkiDir string, now time.Time) []pki.CertStatus {
	files, err := ReadHostTree(pkiDir)
	if err != nil || len(files) == 0 {
		return nil
	}
	return pki.Check(files, nil, "", now, 30*24*time.Hour)
}

// ReadHostTree reads a PKI folder and the kubeconfigs beside it, as
// pki.Check expects them.
func ReadHostTree(pkiDir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	tree, err := pki.ReadTree(pkiDir)
	if err != nil {
		return nil, err
	}
	for k, v := range tree {
		files["pki/"+k] = v
	}
	parent := filepath.Dir(filepath.Clean(pkiDir))
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".conf") {
			if data, err := os.ReadFile(filepath.Join(parent, e.Name())); err == nil {
				files[e.Name()] = data
			}
		}
	}
	return files, nil
}

// LoadCluster loads the cluster file for the cluster-wide sections; when
// it does not load, it returns nil and why, in one line (the status screen
// still shows the agent).
func LoadCluster(path string) (*config.Cluster, string) {
	if path == "" {
		return nil, "no cluster file (--config)"
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Sprintf("no cluster file %s (--config)", path)
	}
	c, err := config.Load(path)
	if err != nil {
		msg, _, more := strings.Cut(err.Error(), "\n")
		if more {
			msg += "; see haplane validate"
		}
		return nil, fmt.Sprintf("cluster file %s does not load: %s", path, msg)
	}
	return c, ""
}
