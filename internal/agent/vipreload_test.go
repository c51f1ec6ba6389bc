package agent

import (
	"errors"
	"net/netip"
	"strconv"
	"testing"

	"github.com/haplane/haplane/internal/config"
)

// Over IPv6 the running speaker's primary is the interface's link-local
// address, not the node's address in the cluster file: a reload that
// leaves the node's address alone must keep it, or the speaker would see
// a primary address change and refuse the whole reload.
func TestVIPReloadKeepsTheRunningPrimary(t *testing.T) {
	file := func(addr string, prio int) *config.Cluster {
		t.Helper()
		c, err := config.Parse("haplane.yaml", []byte(`apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: v6
controlPlaneEndpoint:
  vip: fd77:9::100
vip:
  interface: eth0
  virtualRouterID: 9
nodes:
  - name: cp1
    address: `+addr+`
    priority: `+strconv.Itoa(prio)+`
  - name: cp2
    address: fd77:9::12
    priority: 200
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	linkLocal := netip.MustParseAddr("fe80::1")
	p := &VIPPart{ifname: "eth0", started: netip.MustParseAddr("fd77:9::11"), running: linkLocal}

	next, err := p.next(file("fd77:9::11", 240), "cp1")
	if err != nil {
		t.Fatal(err)
	}
	if next.VRRP.Primary != linkLocal || next.VRRP.Priority != 240 {
		t.Fatalf("primary %v priority %d, want %v and the new priority 240", next.VRRP.Primary, next.VRRP.Priority, linkLocal)
	}
	// A new node address is a real change: it is passed on, for the
	// speaker to refuse as one that needs a restart.
	next, err = p.next(file("fd77:9::21", 240), "cp1")
	if err != nil || next.VRRP.Primary != netip.MustParseAddr("fd77:9::21") {
		t.Fatalf("changed address: primary %v, err %v", next.VRRP.Primary, err)
	}
	// Another interface is refused here.
	p.ifname = "eth1"
	if _, err := p.next(file("fd77:9::11", 240), "cp1"); !errors.Is(err, ErrRestartNeeded) {
		t.Fatalf("other interface: %v, want ErrRestartNeeded", err)
	}
}
