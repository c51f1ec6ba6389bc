package speaker

import (
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/haplane/haplane/internal/vrrp"
)

func TestRenewDue(t *testing.T) {
	const iv = 100 * time.Millisecond
	for _, tc := range []struct {
		name  string
		st    vrrp.State
		since time.Duration
		want  bool
	}{
		{"master advertising", vrrp.Master, 20 * time.Millisecond, true},
		{"master, adverts late but within Master_Down", vrrp.Master, 3 * iv, true},
		{"master, adverts stopped", vrrp.Master, 3*iv + time.Millisecond, false},
		{"master, no advert yet", vrrp.Master, -1, false},
		{"backup", vrrp.Backup, 20 * time.Millisecond, false},
		{"initialize", vrrp.Initialize, 0, false},
	} {
		if got := renewDue(tc.st, tc.since, iv); got != tc.want {
			t.Errorf("%s: renewDue = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := RenewInterval(time.Second); got != 250*time.Millisecond {
		t.Errorf("RenewInterval(1s) = %v, want 250ms", got)
	}
}

func TestAddressLifetimeValidation(t *testing.T) {
	for _, tc := range []struct {
		lt   time.Duration
		want time.Duration // 0: refused
	}{
		{0, time.Second}, {time.Second, time.Second}, {5 * time.Second, 5 * time.Second},
		{500 * time.Millisecond, 0}, {1500 * time.Millisecond, 0}, {-time.Second, 0},
	} {
		c := Config{VRRP: vrrp.Config{Version: 3, VRID: 1, Priority: 100}, AddressLifetime: tc.lt}
		err := c.validate()
		switch {
		case tc.want == 0 && (err == nil || !strings.Contains(err.Error(), "address lifetime")):
			t.Errorf("lifetime %v: validate = %v, want an address lifetime error", tc.lt, err)
		case tc.want != 0 && (err != nil || c.AddressLifetime != tc.want):
			t.Errorf("lifetime %v: validate = %v, lifetime %v, want %v", tc.lt, err, c.AddressLifetime, tc.want)
		}
	}
}

// TestMasterRenewsAddresses: a master renews its addresses four times per
// lifetime, so they stay on the link over many lifetimes; once its adverts
// stop going out (a stuck link) it stops renewing, the backup takes over,
// and the old master's copy expires by itself although its speaker still
// believes it is master.
func TestMasterRenewsAddresses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		a, b := startPair(t, h)
		from := time.Now()
		for range 100 { // 5s, five lifetimes
			if !a.addrs.holds() {
				t.Fatalf("a lost its address %v into its mastership", time.Since(from))
			}
			time.Sleep(50 * time.Millisecond)
		}
		var n int
		for _, at := range a.addrs.takeTimes() {
			if !at.Before(from) {
				n++
			}
		}
		if n < 19 || n > 21 {
			t.Errorf("%d takes/renewals in 5s, want 20 (every 250ms)", n)
		}
		if st := a.sp.Status(); time.Since(st.AddressRenewed) > 250*time.Millisecond {
			t.Errorf("status: address renewed %v ago, want ≤ 250ms", time.Since(st.AddressRenewed))
		}

		// a's adverts stop: b takes over after Master_Down_Interval, and
		// a, which hears nothing either way, stays master but lets go.
		a.conn.writeBlock.Store(true)
		stuck := time.Now()
		time.Sleep(2 * time.Second)
		if a.sp.Status().State != vrrp.Master {
			t.Fatalf("a is %v, want still master (it cannot tell)", a.sp.Status().State)
		}
		if got := holders(a, b); !slices.Equal(got, []int{1}) {
			t.Fatalf("holders %v 2s after a's adverts stopped, want [1]", got)
		}
		if st := a.sp.Status(); st.AddressRenewed.Sub(stuck) > 3*iv+RenewInterval(time.Second) {
			t.Errorf("a renewed %v after its adverts stopped, want within 3 intervals + one renew interval", st.AddressRenewed.Sub(stuck))
		}
		a.conn.writeBlock.Store(false)
		a.stop(t)
		b.stop(t)
	})
}

// TestDelayedReleaseOutlastsLifetime: a leaving or yielding master keeps
// the addresses for its ReleaseDelay, renewing them meanwhile, even when
// the delay is longer than their lifetime.
func TestDelayedReleaseOutlastsLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		long := func(c *Config) { c.ShutdownTimeout, c.ReleaseDelay = 6*time.Second, 2500*time.Millisecond }
		h := &hub{}
		a := startNode(t, h, 1, 150, long)
		b := startNode(t, h, 2, 100, long)
		time.Sleep(time.Second)
		// Yield: b is given the better priority, a keeps the address
		// while b announces itself.
		nb := b.sp.cfg
		nb.VRRP.Priority = 200
		if err := b.sp.Reconfigure(t.Context(), nb); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if a.sp.Status().State != vrrp.Backup {
			t.Fatalf("a is %v, want backup", a.sp.Status().State)
		}
		yielded := a.sp.Status().Since
		time.Sleep(time.Until(yielded.Add(2300 * time.Millisecond)))
		if !a.addrs.holds() {
			t.Fatalf("a dropped the address %v into its 2.5s release delay", time.Since(yielded))
		}
		time.Sleep(400 * time.Millisecond)
		if a.addrs.holds() {
			t.Fatal("a still holds the address after its release delay")
		}

		// Shutdown of the master b: the same on the shutdown path.
		stopped := time.Now()
		go b.cancel()
		time.Sleep(2300 * time.Millisecond)
		if !b.addrs.holds() {
			t.Fatalf("b dropped the address %v into its shutdown's release delay", time.Since(stopped))
		}
		if err := <-b.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if b.addrs.holds() {
			t.Error("b holds the address after its shutdown")
		}
		a.stop(t)
	})
}

// TestReconfigureAddressLifetime: a new lifetime is applied by the running
// master at once, and the address never leaves the link.
func TestReconfigureAddressLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		a := startNode(t, h, 1, 150, nil)
		time.Sleep(time.Second + 100*time.Millisecond) // between two renewals
		na := a.sp.cfg
		na.AddressLifetime = 4 * time.Second
		reloaded := time.Now()
		if err := a.sp.Reconfigure(t.Context(), na); err != nil {
			t.Fatal(err)
		}
		for range 58 { // 2.9s
			if !a.addrs.holds() {
				t.Fatalf("a lost its address %v after the reload", time.Since(reloaded))
			}
			time.Sleep(50 * time.Millisecond)
		}
		var after []time.Time
		for _, at := range a.addrs.takeTimes() {
			if !at.Before(reloaded) {
				after = append(after, at)
			}
		}
		// One renewal at the reload, then one every second.
		if len(after) != 3 || after[0].Sub(reloaded) > 10*time.Millisecond || after[2].Sub(after[1]) != time.Second {
			t.Errorf("renewals at %v after the reload, want at once and then every 1s", after)
		}
		a.stop(t)
	})
}
