package vip

import (
	"fmt"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"
)

// holders6 lists the hosts that have the IPv6 VIP on eth0.
func (l *lab) holders6() []string { return l.holding("-6", " "+vip6+"/128") }

// VRRPv3 over IPv6 (RFC 5798 §5.1.2): adverts from the link-local address
// to ff02::12 with hop limit 255, the VIP as a /128, and unsolicited
// neighbour advertisements that move the client to the new master.
func TestFailoverIPv6(t *testing.T) {
	l := newLab(t, 3)
	l.addIPv6()
	cfg := l.writeConfig(clusterOpts{ipv6: true})
	ps := l.startAll(cfg, 5*time.Second, l.holders6)
	svc := net.JoinHostPort(vip6, fmt.Sprint(svcPort))
	l.servedAt(svc, "h1", 3*time.Second)
	time.Sleep(500 * time.Millisecond)
	if ps[1].state() != "backup" || ps[2].state() != "backup" {
		t.Fatalf("h2 %s, h3 %s: want both backup behind h1", ps[1].state(), ps[2].state())
	}

	// kill -9: the client holds h1's MAC in its neighbour cache; only
	// h2's unsolicited NA (override) moves it in time.
	killed := time.Now()
	ps[0].signal(syscall.SIGKILL)
	l.host("h1").stopService()
	waitFor(t, "h2 master", 2*time.Second, func() bool { return ps[1].state() == "master" })
	l.servedAt(svc, "h2", time.Second)
	t.Logf("IPv6: client served by h2 %v after kill -9 of h1", time.Since(killed))

	// SIGTERM of h2: priority 0, the VIP goes, h3 takes over.
	ps[1].signal(syscall.SIGTERM)
	if !ps[1].exited(3 * time.Second) {
		t.Fatal("h2 did not exit on SIGTERM")
	}
	waitFor(t, "h3 master", 2*time.Second, func() bool { return ps[2].state() == "master" })
	waitFor(t, "h2 released the IPv6 VIP", 2*time.Second, func() bool { return !slices.Contains(l.holders6(), "h2") })
	l.host("h1").ln.Close()
	l.servedAt(svc, "h3", time.Second)
}
