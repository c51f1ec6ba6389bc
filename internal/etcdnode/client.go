package etcdnode

import (
	"crypto/tls"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// ClientTLS names the client certificate haplane presents to etcd (kubeadm's
// etcd/healthcheck-client or apiserver-etcd-client) and the etcd CA.
type ClientTLS struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	CAFile   string `json:"caFile"`
}

// Config loads the files into a TLS client configuration.
func (c ClientTLS) Config() (*tls.Config, error) {
	if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
		return nil, fmt.Errorf("etcdnode: client TLS needs a certificate, key and CA file")
	}
	info := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile}
	tc, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcdnode: load client TLS: %w", err)
	}
	return tc, nil
}

// NewClient connects to endpoints with tc. The dial is not blocking: an
// unreachable cluster shows up as errors of the first calls.
func NewClient(endpoints []string, tc *tls.Config, dialTimeout time.Duration) (*clientv3.Client, error) {
	if dialTimeout == 0 {
		dialTimeout = 2 * time.Second
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		TLS:                  tc,
		DialTimeout:          dialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: dialTimeout,
		Logger:               zap.NewNop(),
		// A member that comes back is seen again within a second: the
		// default reconnect backoff grows to two minutes, which would keep
		// a long-lived prober calling a healthy member dead.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: dialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcdnode: client for %v: %w", endpoints, err)
	}
	return c, nil
}
