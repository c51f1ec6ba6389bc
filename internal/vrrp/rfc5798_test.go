package vrrp

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	t0  = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	vip = netip.MustParseAddr("10.77.3.100")
	ms  = time.Millisecond
)

func addr(n int) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, 3, byte(n)}) }

func cfg3(prio uint8, host int) Config {
	return Config{Version: 3, VRID: 51, Priority: prio, AdvertInterval: 100 * ms, Preempt: true,
		Primary: addr(host), Addrs: []netip.Addr{vip}}
}

func newM(t *testing.T, c Config) *Machine {
	t.Helper()
	m, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func adv(prio uint8, iv time.Duration) *Packet {
	return &Packet{Version: 3, VRID: 51, Priority: prio, AdvertInterval: iv, Addrs: []netip.Addr{vip}}
}

func acts(a ...any) []Action {
	var out []Action
	for _, x := range a {
		switch v := x.(type) {
		case ActionKind:
			out = append(out, Action{Kind: v})
		case int:
			out = append(out, Action{Kind: SendAdvert, Priority: uint8(v)})
		}
	}
	return out
}

func expect(t *testing.T, o Output, state State, deadline time.Time, want []Action) {
	t.Helper()
	if o.State != state {
		t.Errorf("state %v, want %v", o.State, state)
	}
	if !o.Deadline.Equal(deadline) {
		t.Errorf("deadline t0%+v, want t0%+v", o.Deadline.Sub(t0), deadline.Sub(t0))
	}
	if !reflect.DeepEqual(o.Actions, want) {
		t.Errorf("actions %v, want %v", o.Actions, want)
	}
}

// RFC 5798 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256;
// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
// RFC 3768 §6.1 (v2): Skew_Time = (256 - Priority) / 256 seconds.
func TestTimersRFC5798Section6_1(t *testing.T) {
	tests := []struct {
		version        int
		prio           uint8
		iv             time.Duration
		skew, downIntv time.Duration
	}{
		{3, 150, 100 * ms, 41406250, 341406250},
		{3, 254, 100 * ms, 781250, 300781250},
		{3, 1, 100 * ms, 99609375, 399609375},
		{3, 100, time.Second, 609375 * time.Microsecond, 3609375 * time.Microsecond},
		{2, 100, time.Second, 609375 * time.Microsecond, 3609375 * time.Microsecond},
		{2, 100, 3 * time.Second, 609375 * time.Microsecond, 9609375 * time.Microsecond},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("v%d prio %d iv %v", tc.version, tc.prio, tc.iv), func(t *testing.T) {
			c := cfg3(tc.prio, 1)
			c.Version, c.AdvertInterval = tc.version, tc.iv
			m := newM(t, c)
			if got := m.SkewTime(); got != tc.skew {
				t.Errorf("Skew_Time %v, want %v", got, tc.skew)
			}
			if got := m.MasterDownInterval(); got != tc.downIntv {
				t.Errorf("Master_Down_Interval %v, want %v", got, tc.downIntv)
			}
		})
	}
}

func TestStateMachineRFC5798Section6_4(t *testing.T) {
	iv := 100 * ms
	down150 := 3*iv + 106*iv/256
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"§6.4.1 startup of a non-owner: Backup, Master_Down_Timer = Master_Down_Interval", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			o := m.Start(t0)
			expect(t, o, Backup, t0.Add(down150), nil)
			if !o.Changed {
				t.Error("Changed not set")
			}
		}},
		{"§6.4.1 startup of the owner (255): advertise, take, announce, Master", func(t *testing.T) {
			m := newM(t, cfg3(255, 1))
			expect(t, m.Start(t0), Master, t0.Add(iv), acts(255, TakeAddrs, Announce))
		}},
		{"§6.4.2 Master_Down_Timer fires: advertise, take, announce, Adver_Timer", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			expect(t, m.Tick(t0.Add(down150-1)), Backup, t0.Add(down150), nil)
			at := t0.Add(down150)
			expect(t, m.Tick(at), Master, at.Add(iv), acts(150, TakeAddrs, Announce))
		}},
		{"§6.4.2 backup hears a higher-priority master: reset timer, learn Master_Adver_Interval (v3)", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			at := t0.Add(200 * ms)
			o := m.Receive(at, addr(2), TTL, adv(200, 50*ms))
			if m.MasterAdverInterval() != 50*ms {
				t.Errorf("Master_Adver_Interval %v, want 50ms learnt", m.MasterAdverInterval())
			}
			expect(t, o, Backup, at.Add(3*50*ms+106*50*ms/256), nil)
		}},
		{"§6.4.2 backup hears priority 0: Master_Down_Timer = Skew_Time", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			at := t0.Add(200 * ms)
			expect(t, m.Receive(at, addr(2), TTL, adv(0, iv)), Backup, at.Add(106*iv/256), nil)
		}},
		{"§6.4.2 preempt: backup ignores a lower-priority master and takes over", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			for i := 1; i <= 3; i++ {
				expect(t, m.Receive(t0.Add(time.Duration(i)*iv), addr(2), TTL, adv(100, iv)), Backup, t0.Add(down150), nil)
			}
			expect(t, m.Tick(t0.Add(down150)), Master, t0.Add(down150+iv), acts(150, TakeAddrs, Announce))
		}},
		{"§6.4.2 preempt off: backup accepts a lower-priority master", func(t *testing.T) {
			c := cfg3(150, 1)
			c.Preempt = false
			m := newM(t, c)
			m.Start(t0)
			at := t0.Add(300 * ms)
			expect(t, m.Receive(at, addr(2), TTL, adv(100, iv)), Backup, at.Add(down150), nil)
		}},
		{"preempt delay: a lower master is accepted until the delay from start ends", func(t *testing.T) {
			c := cfg3(150, 1)
			c.PreemptDelay = time.Second
			m := newM(t, c)
			m.Start(t0)
			at := t0.Add(900 * ms)
			expect(t, m.Receive(at, addr(2), TTL, adv(100, iv)), Backup, at.Add(down150), nil)
			late := t0.Add(time.Second)
			expect(t, m.Receive(late, addr(2), TTL, adv(100, iv)), Backup, at.Add(down150), nil)
			expect(t, m.Tick(at.Add(down150)), Master, at.Add(down150+iv), acts(150, TakeAddrs, Announce))
		}},
		{"§6.4.2 equal priority: backup accepts the master", func(t *testing.T) {
			m := newM(t, cfg3(150, 9))
			m.Start(t0)
			at := t0.Add(100 * ms)
			expect(t, m.Receive(at, addr(2), TTL, adv(150, iv)), Backup, at.Add(down150), nil)
		}},
		{"§6.4.3 Adver_Timer fires: advertise; deadlines do not drift on late ticks", func(t *testing.T) {
			m := newM(t, cfg3(255, 1))
			m.Start(t0)
			expect(t, m.Tick(t0.Add(iv+7*ms)), Master, t0.Add(2*iv), acts(255))
			// A tick more than an interval late restarts from now.
			late := t0.Add(5*iv + 3*ms)
			expect(t, m.Tick(late), Master, late.Add(iv), acts(255))
		}},
		{"§6.4.3 master hears a higher priority: release, Backup", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			m.Tick(t0.Add(down150))
			at := t0.Add(time.Second)
			o := m.Receive(at, addr(2), TTL, adv(200, 200*ms))
			expect(t, o, Backup, at.Add(3*200*ms+106*200*ms/256), acts(ReleaseAddrs, 150))
			if !o.Changed || !strings.Contains(o.Reason, "higher priority") {
				t.Errorf("Changed %v reason %q", o.Changed, o.Reason)
			}
		}},
		{"§6.4.3 tie: the master with the lower primary address yields", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			m.Tick(t0.Add(down150))
			at := t0.Add(time.Second)
			o := m.Receive(at, addr(2), TTL, adv(150, iv))
			expect(t, o, Backup, at.Add(down150), acts(ReleaseAddrs, 150))
			if !strings.Contains(o.Reason, "tie") {
				t.Errorf("reason %q", o.Reason)
			}
		}},
		{"§6.4.3 tie: the master with the higher primary address keeps it and re-asserts at once", func(t *testing.T) {
			m := newM(t, cfg3(150, 2))
			m.Start(t0)
			m.Tick(t0.Add(down150))
			at := t0.Add(time.Second + 30*ms)
			expect(t, m.Receive(at, addr(1), TTL, adv(150, iv)), Master, at.Add(iv), acts(150, Announce))
			// Re-assertion is bounded to once per interval.
			expect(t, m.Receive(at.Add(50*ms), addr(1), TTL, adv(150, iv)), Master, at.Add(iv), nil)
			expect(t, m.Receive(at.Add(iv), addr(1), TTL, adv(150, iv)), Master, at.Add(2*iv), acts(150, Announce))
		}},
		{"healed partition: the higher-priority master re-asserts when it hears the other", func(t *testing.T) {
			m := newM(t, cfg3(200, 1))
			m.Start(t0)
			m.Tick(t0.Add(time.Second))
			at := t0.Add(2 * time.Second)
			o := m.Receive(at, addr(2), TTL, adv(100, iv))
			expect(t, o, Master, at.Add(iv), acts(200, Announce))
			if o.Changed {
				t.Error("Changed set without a transition")
			}
		}},
		{"§6.4.3 master hears priority 0: advertise at once, reset Adver_Timer", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			m.Tick(t0.Add(down150))
			at := t0.Add(time.Second)
			expect(t, m.Receive(at, addr(2), TTL, adv(0, iv)), Master, at.Add(iv), acts(150))
		}},
		{"§6.4.3 shutdown of the master: advertise priority 0, release, Initialize", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			m.Tick(t0.Add(down150))
			expect(t, m.Shutdown(t0.Add(time.Second)), Initialize, time.Time{}, acts(0, ReleaseAddrs))
		}},
		{"§6.4.2 shutdown of a backup: no advert, Initialize", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			expect(t, m.Shutdown(t0.Add(time.Second)), Initialize, time.Time{}, nil)
			// And it can start again.
			expect(t, m.Start(t0.Add(2*time.Second)), Backup, t0.Add(2*time.Second+down150), nil)
		}},
		{"§6.4.3 own adverts looped back are not a second master", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			m.Tick(t0.Add(down150))
			expect(t, m.Receive(t0.Add(time.Second), addr(1), TTL, adv(150, iv)), Master, t0.Add(down150+iv), nil)
		}},
		{"priority change: a master advertises the new priority at once", func(t *testing.T) {
			m := newM(t, cfg3(150, 1))
			m.Start(t0)
			m.Tick(t0.Add(down150))
			at := t0.Add(time.Second)
			o, err := m.SetPriority(at, 90)
			if err != nil {
				t.Fatal(err)
			}
			expect(t, o, Master, at.Add(iv), acts(90))
			// A backup at 100 now preempts it; the master at 90 yields.
			o = m.Receive(at.Add(10*ms), addr(2), TTL, adv(100, iv))
			expect(t, o, Backup, at.Add(10*ms+3*iv+166*iv/256), acts(ReleaseAddrs, 90))
		}},
		{"priority change: the owner and priority 0 are refused", func(t *testing.T) {
			m := newM(t, cfg3(255, 1))
			if _, err := m.SetPriority(t0, 100); err == nil {
				t.Error("owner priority changed")
			}
			m = newM(t, cfg3(100, 1))
			if _, err := m.SetPriority(t0, 0); err == nil {
				t.Error("priority 0 accepted")
			}
			if m.Priority() != 100 {
				t.Errorf("priority %d after refused changes", m.Priority())
			}
		}},
		{"RFC 3768 §6.4.2 (v2): the interval is configured, never learnt", func(t *testing.T) {
			c := cfg3(150, 1)
			c.Version, c.AdvertInterval, c.AuthType, c.AuthData = 2, time.Second, AuthSimple, mustPass(t, "pw")
			m := newM(t, c)
			m.Start(t0)
			p := &Packet{Version: 2, VRID: 51, Priority: 200, AdvertInterval: time.Second, AuthType: AuthSimple, AuthData: mustPass(t, "pw"), Addrs: []netip.Addr{vip}}
			at := t0.Add(time.Second)
			expect(t, m.Receive(at, addr(2), TTL, p), Backup, at.Add(3*time.Second+106*time.Second/256), nil)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
}

// RFC 5798 §7.1 and RFC 3768 §7.1: receive validation. A dropped advert
// changes neither state nor timers, in Backup or Master.
func TestReceiveValidationRFC5798Section7_1(t *testing.T) {
	v2 := cfg3(150, 1)
	v2.Version, v2.AdvertInterval, v2.AuthType, v2.AuthData = 2, time.Second, AuthSimple, mustPass(t, "secret")
	good2 := func() *Packet {
		return &Packet{Version: 2, VRID: 51, Priority: 254, AdvertInterval: time.Second, AuthType: AuthSimple, AuthData: mustPass(t, "secret"), Addrs: []netip.Addr{vip}}
	}
	tests := []struct {
		name string
		cfg  Config
		ttl  int
		p    *Packet
		want error
	}{
		{"§7.1 TTL 64", cfg3(150, 1), 64, adv(254, 100*ms), ErrTTL},
		{"§7.1 TTL 254", cfg3(150, 1), 254, adv(254, 100*ms), ErrTTL},
		{"§7.1 other VRID", cfg3(150, 1), TTL, &Packet{Version: 3, VRID: 52, Priority: 254, AdvertInterval: 100 * ms, Addrs: []netip.Addr{vip}}, ErrVRID},
		{"§7.1 version 2 to a v3 router", cfg3(150, 1), TTL, good2(), ErrVersion},
		{"RFC 3768 §7.1 wrong password", v2, TTL, func() *Packet { p := good2(); p.AuthData = mustPass(t, "guess"); return p }(), ErrAuth},
		{"RFC 3768 §7.1 no auth", v2, TTL, func() *Packet { p := good2(); p.AuthType = AuthNone; return p }(), ErrAuth},
		{"RFC 3768 §7.1 interval mismatch", v2, TTL, func() *Packet { p := good2(); p.AdvertInterval = 2 * time.Second; return p }(), ErrIntervalMismatch},
	}
	for _, tc := range tests {
		for _, master := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s master=%v", tc.name, master), func(t *testing.T) {
				m := newM(t, tc.cfg)
				before := m.Start(t0)
				if master {
					before = m.Tick(before.Deadline)
				}
				o := m.Receive(before.Deadline.Add(-time.Millisecond), addr(2), tc.ttl, tc.p)
				if !errors.Is(o.Drop, tc.want) {
					t.Fatalf("Drop = %v, want %v", o.Drop, tc.want)
				}
				expect(t, o, before.State, before.Deadline, nil)
			})
		}
	}
}

func TestConfigValidation(t *testing.T) {
	mod := func(f func(*Config)) Config { c := cfg3(150, 1); f(&c); return c }
	bad := map[string]Config{
		"vrid 0":                 mod(func(c *Config) { c.VRID = 0 }),
		"priority 0":             mod(func(c *Config) { c.Priority = 0 }),
		"version 4":              mod(func(c *Config) { c.Version = 4 }),
		"no primary":             mod(func(c *Config) { c.Primary = netip.Addr{} }),
		"no addrs":               mod(func(c *Config) { c.Addrs = nil }),
		"mixed family":           mod(func(c *Config) { c.Addrs = []netip.Addr{netip.MustParseAddr("fd00::1")} }),
		"v2 sub-second":          mod(func(c *Config) { c.Version = 2 }),
		"v3 5ms":                 mod(func(c *Config) { c.AdvertInterval = 5 * ms }),
		"negative preempt delay": mod(func(c *Config) { c.PreemptDelay = -1 }),
	}
	for name, c := range bad {
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	c := cfg3(150, 1)
	c.Version, c.AdvertInterval = 0, 0
	m, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	// The cluster file's defaults (config.DefaultAdvertInterval,
	// DefaultVRRPVersion2Advert), not the RFCs' 1s for both.
	if m.cfg.Version != 3 || m.cfg.AdvertInterval != 100*ms {
		t.Errorf("defaults: version %d interval %v, want 3, 100ms", m.cfg.Version, m.cfg.AdvertInterval)
	}
	c.Version = 2
	if m, err = New(c); err != nil {
		t.Fatalf("v2 with the default interval: %v", err)
	}
	if m.cfg.AdvertInterval != time.Second {
		t.Errorf("v2 default interval %v, want 1s (whole seconds only)", m.cfg.AdvertInterval)
	}
}
