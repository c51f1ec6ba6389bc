package speaker

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/haplane/haplane/internal/vrrp"
)

// TestReconfigureMovesTheVIP reloads a running pair: a backup given the
// highest priority preempts, a new interval changes the advert rate at
// once, and a change of identity is refused without disturbing the router.
func TestReconfigureMovesTheVIP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{}
		a, b := startPair(t, h)

		// b now outranks a: it stops following a's adverts and takes
		// over at its Master_Down_Timer (3 intervals + skew ≈ 320 ms).
		nb := b.sp.cfg
		nb.VRRP.Priority = 200
		reloaded := time.Now()
		if err := b.sp.Reconfigure(t.Context(), nb); err != nil {
			t.Fatal(err)
		}
		if st := b.sp.Status(); st.Priority != 200 {
			t.Errorf("b status after reload: %+v", st)
		}
		time.Sleep(500 * time.Millisecond)
		// a yields on b's first advert and keeps the address for its
		// ReleaseDelay (3 intervals) while b announces itself.
		if got := holders(a, b); !slices.Equal(got, []int{0, 1}) {
			t.Fatalf("holders %v 500ms after b's reload, want [0 1] (a within its release delay)", got)
		}
		time.Sleep(300 * time.Millisecond)
		if got := holders(a, b); !slices.Equal(got, []int{1}) {
			t.Fatalf("holders %v 800ms after b's reload, want [1]", got)
		}
		at := b.addrs.announceTimes()
		if len(at) == 0 || at[0].Sub(reloaded) > 400*time.Millisecond {
			t.Errorf("b announced at %v after its reload, want within 400ms", at)
		}

		// The master's interval: 100ms → 50ms, advertised at once.
		nb.VRRP.AdvertInterval = 50 * time.Millisecond
		before := len(b.conn.adverts())
		if err := b.sp.Reconfigure(t.Context(), nb); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if n := len(b.conn.adverts()) - before; n < 19 || n > 22 {
			t.Errorf("%d adverts in the second after a 50ms interval, want ~20", n)
		}
		if st := b.sp.Status(); st.AdvertInterval != "50ms" {
			t.Errorf("status interval %q", st.AdvertInterval)
		}
		// a (VRRPv3) learnt the interval: it still follows b.
		if got := holders(a, b); !slices.Equal(got, []int{1}) {
			t.Fatalf("holders %v after the interval change, want [1]", got)
		}

		// Another VRID is another router: refused, nothing changes.
		bad := nb
		bad.VRRP.VRID = 52
		if err := b.sp.Reconfigure(t.Context(), bad); !errors.Is(err, vrrp.ErrRestartNeeded) {
			t.Errorf("VRID change: %v, want ErrRestartNeeded", err)
		}
		time.Sleep(500 * time.Millisecond)
		if got := holders(a, b); !slices.Equal(got, []int{1}) || b.sp.Status().State != vrrp.Master {
			t.Fatalf("holders %v after a refused reload, want [1]", got)
		}
		a.stop(t)
		b.stop(t)
	})
}

func TestReconfigureNotRunning(t *testing.T) {
	h := &hub{}
	n := startNode(t, h, 1, 150, nil)
	n.stop(t)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := n.sp.Reconfigure(ctx, n.sp.cfg); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("reconfigure of a stopped speaker: %v", err)
	}
}
