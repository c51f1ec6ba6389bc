// Command haplane makes a Kubernetes control plane highly available on
// machines without a cloud load balancer: VRRP virtual IP, L4 load balancer,
// HA etcd, leader election and cluster bootstrap in one binary.
//
// main stays thin: it hands the arguments to internal/cli and exits with the
// code cli.Run returns. This is the only place the process exits.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/haplane/haplane/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
