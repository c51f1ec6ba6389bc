package vip

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

// answer is one neighbour's reply for the VIP: an ARP reply or a neighbour
// advertisement, and the MAC it gives.
type answer struct {
	at  time.Time
	mac string
}

// answers asks the link who has the VIP, from the client, every 20ms
// (ARP requests for IPv4, neighbour solicitations for IPv6), and records
// every answer until stop is called (or limit passes).
type answers struct {
	mu  sync.Mutex // protects got
	got []answer

	stop func()
}

// macsIn lists the MACs that answered in [from, to], in order of first
// answer.
func (a *answers) macsIn(from, to time.Time) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, g := range a.got {
		if !g.at.Before(from) && !g.at.After(to) && !slices.Contains(out, g.mac) {
			out = append(out, g.mac)
		}
	}
	return out
}

func (a *answers) add(mac net.HardwareAddr) {
	a.mu.Lock()
	a.got = append(a.got, answer{at: time.Now(), mac: mac.String()})
	a.mu.Unlock()
}

// askWhoHas starts the client's questions for vip; bounded by limit.
func (l *lab) askWhoHas(vip netip.Addr, limit time.Duration) *answers {
	l.t.Helper()
	a := &answers{}
	done := make(chan struct{})
	var once sync.Once
	quit := make(chan struct{})
	a.stop = func() { once.Do(func() { close(quit) }); <-done }
	ready := make(chan error, 1)
	go func() {
		defer close(done)
		err := inNS(l.client, func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			var ask func() error
			var read func() (net.HardwareAddr, error)
			var closeConn func() error
			var setDeadline func(time.Time) error
			if vip.Is4() {
				c, err := arp.Dial(ifi)
				if err != nil {
					return err
				}
				ask, closeConn, setDeadline = func() error { return c.Request(vip) }, c.Close, c.SetReadDeadline
				read = func() (net.HardwareAddr, error) {
					for {
						p, _, err := c.Read()
						if err != nil {
							return nil, err
						}
						if p.Operation == arp.OperationReply && p.SenderIP == vip {
							return p.SenderHardwareAddr, nil
						}
					}
				}
			} else {
				c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
				if err != nil {
					return err
				}
				snm, err := ndp.SolicitedNodeMulticast(vip)
				if err != nil {
					return err
				}
				ns := &ndp.NeighborSolicitation{TargetAddress: vip,
					Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
				ask, closeConn, setDeadline = func() error { return c.WriteTo(ns, nil, snm) }, c.Close, c.SetReadDeadline
				read = func() (net.HardwareAddr, error) {
					for {
						m, _, _, err := c.ReadFrom()
						if err != nil {
							return nil, err
						}
						na, ok := m.(*ndp.NeighborAdvertisement)
						if !ok || na.TargetAddress != vip {
							continue
						}
						for _, o := range na.Options {
							if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
								return lla.Addr, nil
							}
						}
					}
				}
			}
			defer closeConn()
			ready <- nil
			readDone := make(chan struct{})
			go func() {
				defer close(readDone)
				for {
					mac, err := read()
					if err != nil {
						return // closed, or the deadline below
					}
					a.add(mac)
				}
			}()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			end := time.After(limit)
			for {
				if err := ask(); err != nil {
					l.t.Logf("who-has %v: %v", vip, err)
				}
				select {
				case <-tick.C:
				case <-quit:
				case <-end:
				}
				select {
				case <-quit:
				case <-end:
				default:
					continue
				}
				// Answers to the last question may still come.
				time.Sleep(50 * time.Millisecond)
				setDeadline(time.Now())
				<-readDone
				return nil
			}
		})
		if err != nil {
			ready <- err
		}
	}()
	if err := <-ready; err != nil {
		l.t.Fatalf("who-has prober: %v", err)
	}
	l.t.Cleanup(a.stop)
	return a
}

// mac returns h's eth0 MAC.
func (h *host) mac(t *testing.T) string {
	t.Helper()
	f := strings.Fields(run(t, "ip", "-n", h.ns, "-o", "link", "show", "dev", "eth0"))
	if i := slices.Index(f, "link/ether"); i >= 0 && i+1 < len(f) {
		return f[i+1]
	}
	t.Fatalf("no MAC for %s", h.name)
	return ""
}

// TestKill9VIPExpires: kill -9 of the master's speaker leaves the VIP on
// its link only for the address's lifetime (vip.addressLifetime, 1s by
// default): within 2s of the kill only the new master answers the
// client's ARP requests (IPv4) or neighbour solicitations (IPv6) for the
// VIP, and the address is gone from the dead node's link. Before, the
// dead node answered next to the new master until someone removed it.
func TestKill9VIPExpires(t *testing.T) {
	for _, fam := range []string{"IPv4", "IPv6"} {
		t.Run(fam, func(t *testing.T) {
			l := newLab(t, 2)
			o := clusterOpts{}
			vip, holders := netip.MustParseAddr(vipAddr), l.holders
			if fam == "IPv6" {
				l.addIPv6()
				o.ipv6, vip, holders = true, netip.MustParseAddr(vip6), l.holders6
			}
			cfg := l.writeConfig(o)
			ps := l.startAll(cfg, 5*time.Second, holders)
			mac1, mac2 := l.host("h1").mac(t), l.host("h2").mac(t)

			ans := l.askWhoHas(vip, 10*time.Second)
			// A second of renewals first (four per lifetime): h1 answers
			// alone all along.
			time.Sleep(1500 * time.Millisecond)
			killed := time.Now()
			ps[0].signal(syscall.SIGKILL)
			var gone time.Duration
			for time.Since(killed) < 4*time.Second {
				if !slices.Contains(holders(), "h1") {
					gone = time.Since(killed)
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(killed.Add(3 * time.Second).Sub(time.Now()))
			ans.stop()
			t.Logf("%s: kill -9 of the master: its VIP gone from its link after %v; h2 master %v", fam, gone, sinceOr(ps[1], killed))

			if got := ans.macsIn(killed.Add(-time.Second), killed); !slices.Equal(got, []string{mac1}) {
				t.Errorf("answers for the VIP before the kill from %v, want h1 (%s) alone", got, mac1)
			}
			if gone == 0 || gone >= 2*time.Second {
				t.Errorf("h1's VIP still on its link %v after the kill, want gone in < 2s", cmpGone(gone))
			}
			if got := ans.macsIn(killed.Add(2*time.Second), killed.Add(3*time.Second)); !slices.Equal(got, []string{mac2}) {
				t.Errorf("answers for the VIP 2-3s after the kill from %v, want h2 (%s) alone (h1 is %s)", got, mac2, mac1)
			}
			if ps[1].state() != "master" {
				t.Errorf("h2 is %q, want master", ps[1].state())
			}
		})
	}
}

func sinceOr(p *proc, t0 time.Time) string {
	if m, ok := p.firstState("master", t0); ok {
		return "after " + m.Sub(t0).String()
	}
	return "never"
}

func cmpGone(d time.Duration) string {
	if d == 0 {
		return "over 4s"
	}
	return d.String()
}

// TestSIGSTOPVIPExpires: a master that hangs (SIGSTOP: every goroutine
// stops, as in a livelock or a long freeze) stops renewing the VIP, which
// leaves its link within 2s; it comes back as master's rival when
// continued, and hands over or re-asserts as VRRP says.
func TestSIGSTOPVIPExpires(t *testing.T) {
	l := newLab(t, 2)
	cfg := l.writeConfig(clusterOpts{})
	ps := l.startAll(cfg, 5*time.Second, l.holders)
	stopped := time.Now()
	ps[0].signal(syscall.SIGSTOP)
	t.Cleanup(func() { ps[0].signal(syscall.SIGCONT) })
	var gone time.Duration
	for time.Since(stopped) < 4*time.Second {
		if !slices.Contains(l.holders(), "h1") {
			gone = time.Since(stopped)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("SIGSTOP of the master: its VIP gone after %v", gone)
	if gone == 0 || gone >= 2*time.Second {
		t.Errorf("h1's VIP still on its link %v after SIGSTOP, want gone in < 2s", cmpGone(gone))
	}
	waitFor(t, "h2 holds the VIP", 2*time.Second, func() bool { return slices.Equal(l.holders(), []string{"h2"}) })
	// Continued, h1 (the better priority, preempting) takes the VIP back
	// and holds it, renewed.
	ps[0].signal(syscall.SIGCONT)
	waitFor(t, "h1 holds the VIP again", 3*time.Second, func() bool { return slices.Equal(l.holders(), []string{"h1"}) })
	time.Sleep(2 * time.Second)
	if h := l.holders(); !slices.Equal(h, []string{"h1"}) {
		t.Errorf("holders 2s after SIGCONT %v, want h1 alone", h)
	}
}
