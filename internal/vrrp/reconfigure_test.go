package vrrp

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestReconfigure(t *testing.T) {
	master := func(t *testing.T, c Config) *Machine {
		m := newM(t, c)
		m.Start(t0)
		m.Tick(t0.Add(m.MasterDownInterval())) // nobody else: master
		if m.State() != Master {
			t.Fatalf("state %v, want master", m.State())
		}
		return m
	}
	t.Run("master priority and interval: advertises at once", func(t *testing.T) {
		m := master(t, cfg3(200, 1))
		now := t0.Add(time.Second)
		next := cfg3(150, 1)
		next.AdvertInterval = 50 * ms
		o, err := m.Reconfigure(now, next, 150)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, o, Master, now.Add(50*ms), acts(150))
		if m.Priority() != 150 || m.MasterAdverInterval() != 50*ms || m.Advert(150).AdvertInterval != 50*ms {
			t.Errorf("priority %d, interval %v", m.Priority(), m.MasterAdverInterval())
		}
		// The Adver_Timer now runs on the new interval.
		expect(t, m.Tick(now.Add(50*ms)), Master, now.Add(100*ms), acts(150))
	})
	t.Run("backup that now outranks the master preempts it", func(t *testing.T) {
		m := newM(t, cfg3(100, 1))
		m.Start(t0)
		m.Receive(t0, addr(2), TTL, adv(150, 100*ms)) // cp2 is master at 150
		now := t0.Add(50 * ms)
		o, err := m.Reconfigure(now, cfg3(200, 1), 200)
		if err != nil || len(o.Actions) != 0 || o.State != Backup {
			t.Fatalf("reconfigure: %+v %v", o, err)
		}
		// The lower master's adverts no longer refresh the timer ...
		m.Receive(now.Add(50*ms), addr(2), TTL, adv(150, 100*ms))
		// ... so the Master_Down_Timer set at t0 fires.
		o = m.Tick(t0.Add(3*100*ms + (256-100)*100*ms/256))
		if o.State != Master {
			t.Fatalf("state %v after the master down timer, want master", o.State)
		}
	})
	t.Run("preempt off: the backup keeps following", func(t *testing.T) {
		m := newM(t, cfg3(100, 1))
		m.Start(t0)
		m.Receive(t0, addr(2), TTL, adv(150, 100*ms))
		next := cfg3(200, 1)
		next.Preempt = false
		if _, err := m.Reconfigure(t0, next, 200); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 10; i++ {
			m.Receive(t0.Add(time.Duration(i)*100*ms), addr(2), TTL, adv(150, 100*ms))
			if o := m.Tick(t0.Add(time.Duration(i)*100*ms + ms)); o.State != Backup {
				t.Fatalf("took over at %d with preempt off", i)
			}
		}
	})
	t.Run("preempt delay still counts from start", func(t *testing.T) {
		m := newM(t, cfg3(200, 1))
		m.Start(t0)
		next := cfg3(200, 1)
		next.PreemptDelay = 10 * time.Second
		if _, err := m.Reconfigure(t0.Add(time.Second), next, 200); err != nil {
			t.Fatal(err)
		}
		if want := t0.Add(10 * time.Second); !m.preemptAfter.Equal(want) {
			t.Errorf("preempt after t0%+v, want t0+10s", m.preemptAfter.Sub(t0))
		}
	})
	t.Run("v2 backup uses the new configured interval", func(t *testing.T) {
		c := cfg3(100, 1)
		c.Version, c.AdvertInterval = 2, time.Second
		m := newM(t, c)
		m.Start(t0)
		c.AdvertInterval = 2 * time.Second
		if _, err := m.Reconfigure(t0, c, 100); err != nil {
			t.Fatal(err)
		}
		if m.MasterAdverInterval() != 2*time.Second {
			t.Errorf("interval %v", m.MasterAdverInterval())
		}
	})
	t.Run("nothing changed: no action", func(t *testing.T) {
		m := master(t, cfg3(200, 1))
		o, err := m.Reconfigure(t0.Add(time.Second), cfg3(200, 1), 200)
		if err != nil || len(o.Actions) != 0 || o.Reason != "" {
			t.Errorf("%+v %v", o, err)
		}
	})
	refused := []struct {
		name string
		edit func(*Config)
		prio uint8
		want error
	}{
		{"vrid", func(c *Config) { c.VRID = 52 }, 200, ErrRestartNeeded},
		{"version", func(c *Config) { c.Version = 2; c.AdvertInterval = time.Second }, 200, ErrRestartNeeded},
		{"primary", func(c *Config) { c.Primary = addr(9) }, 200, ErrRestartNeeded},
		{"addresses", func(c *Config) { c.Addrs = []netip.Addr{addr(101)} }, 200, ErrRestartNeeded},
		{"becomes owner", func(c *Config) { c.Priority = 255 }, 255, ErrRestartNeeded},
		{"invalid interval", func(c *Config) { c.AdvertInterval = 5 * ms }, 200, nil},
		{"priority 0", func(c *Config) {}, 0, nil},
	}
	for _, tt := range refused {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			m := master(t, cfg3(200, 1))
			before := *m
			next := cfg3(200, 1)
			tt.edit(&next)
			o, err := m.Reconfigure(t0.Add(time.Second), next, tt.prio)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if len(o.Actions) != 0 || m.cfg.VRID != before.cfg.VRID || m.prio != before.prio ||
				m.cfg.AdvertInterval != before.cfg.AdvertInterval || m.cfg.Primary != before.cfg.Primary {
				t.Errorf("a refused reconfigure changed the machine: %+v", o)
			}
		})
	}
}
