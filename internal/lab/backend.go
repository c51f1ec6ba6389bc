package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/haplane/haplane/internal/config"
	"github.com/haplane/haplane/internal/etcdnode"
	"github.com/haplane/haplane/internal/stubapi"
)

// ServeStub runs the stub API server of the control-plane node named node
// until ctx ends: the node's apiserver certificate (from pkiDir) on its
// address and API port, writing to etcd with the apiserver-etcd-client
// certificate.
func ServeStub(ctx context.Context, c *config.Cluster, node, pkiDir string, log *slog.Logger) error {
	n, ok := c.NodeByName(node)
	if !ok {
		return FlagError{fmt.Errorf("--node %q is not a control-plane node", node)}
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "apiserver.crt"), filepath.Join(pkiDir, "apiserver.key"))
	if err != nil {
		return err
	}
	cli, err := etcdnode.APIServerClient(c, pkiDir, 2*time.Second)
	if err != nil {
		return err
	}
	defer cli.Close()
	addr := net.JoinHostPort(n.Address, strconv.Itoa(c.ControlPlaneEndpoint.APIServerPort))
	s, err := stubapi.Start(stubapi.Config{Addr: addr, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, KV: stubapi.EtcdKV{Client: cli}, Name: n.Name, Log: log})
	if err != nil {
		return err
	}
	log.Info("stub apiserver serving", "addr", addr)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(sctx)
}
