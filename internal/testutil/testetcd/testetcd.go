// Package testetcd runs a real single-member etcd in-process on loopback
// for a test, with its data in the test's temporary folder, and opens
// clients to it. Only tests import it.
package testetcd

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Ready is how long Start waits for the member to serve.
const Ready = 20 * time.Second

// Member is a running single-member etcd.
type Member struct {
	Etcd *embed.Etcd
	// URL is the member's client URL (http, loopback).
	URL  string
	once sync.Once
}

// Close stops the member; a second call does nothing (embed's Close must
// run once). Start registers it with t.Cleanup.
func (m *Member) Close() { m.once.Do(m.Etcd.Close) }

// Start runs a single-member etcd on free loopback ports and returns it
// once it serves; it stops when the test ends. tune, when not nil, changes
// the configuration before the start. The ports are picked free and then
// bound by etcd: another package's test running beside this one may take
// one in between, so a bind failure picks new ports (up to 5 times).
func Start(t testing.TB, tune func(*embed.Config)) *Member {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cfg := embed.NewConfig()
		cfg.Dir = t.TempDir()
		cfg.LogLevel = "error"
		cu, pu := freeURL(t), freeURL(t)
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.InitialCluster = cfg.Name + "=" + pu.String()
		if tune != nil {
			tune(cfg)
		}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			inUse := errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
			if !inUse || attempt == 5 {
				t.Fatalf("testetcd: starting etcd on %s: %v", cu.Host, err)
			}
			continue
		}
		m := &Member{Etcd: e, URL: cu.String()}
		t.Cleanup(m.Close)
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(Ready):
			t.Fatalf("testetcd: etcd on %s not ready after %s", cu.Host, Ready)
		}
		return m
	}
}

func freeURL(t testing.TB) url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}
