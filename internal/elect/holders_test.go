package elect

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/testutil/testetcd"
)

// TestHolders lists the leader of every election on a real etcd: one
// election with a waiting candidate, one whose lock has a slash, and the
// waiting candidate once the leader resigns.
func TestHolders(t *testing.T) {
	member := testetcd.Start(t, nil)
	cli := member.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if hs, err := Holders(ctx, cli); err != nil || len(hs) != 0 {
		t.Fatalf("no elections: %v %v", hs, err)
	}
	// lead campaigns for lock as id until stop is called; leading is
	// closed once it leads.
	type candidate struct {
		leading chan struct{}
		stop    context.CancelFunc
		done    chan error
	}
	lead := func(lock, id string) candidate {
		c := candidate{leading: make(chan struct{}), done: make(chan error, 1)}
		lctx, stop := context.WithCancel(ctx)
		c.stop = stop
		cc := member.Client(t) // closed after the candidate stops
		go func() {
			c.done <- Lead(lctx, Config{Client: cc, Lock: lock, Identity: id, TTL: 2 * time.Second}, func(wctx context.Context, _ Term) error {
				close(c.leading)
				<-wctx.Done()
				return nil
			})
		}()
		t.Cleanup(func() { c.stop(); <-c.done })
		return c
	}
	wait := func(c candidate) {
		t.Helper()
		select {
		case <-c.leading:
		case <-ctx.Done():
			t.Fatal("candidate never led")
		}
	}
	a := lead("alpha", "a")
	wait(a)
	b := lead("alpha", "b")
	c := lead("beta/sub", "c")
	wait(c)
	// b campaigns once its key exists: wait for two candidates on alpha.
	var hs []Holder
	for {
		var err error
		if hs, err = Holders(ctx, cli); err != nil {
			t.Fatal(err)
		}
		if len(hs) == 2 && hs[0].Candidates == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("holders never showed the waiting candidate: %+v", hs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if hs[0].Lock != "alpha" || hs[0].Identity != "a" || hs[1].Lock != "beta/sub" || hs[1].Identity != "c" || hs[1].Candidates != 1 {
		t.Fatalf("holders = %+v", hs)
	}
	for _, h := range hs {
		id, tok, err := Leader(ctx, cli, h.Lock)
		if err != nil || id != h.Identity || tok != h.Token || h.Lease == 0 {
			t.Errorf("%s: Leader = %q %d %v; Holders says %+v", h.Lock, id, tok, err, h)
		}
	}
	// a resigns: b leads, with a larger token.
	a.stop()
	if err := <-a.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a: %v", err)
	}
	a.done <- nil // for the cleanup
	wait(b)
	next, err := Holders(ctx, cli)
	if err != nil || len(next) != 2 || next[0].Identity != "b" || next[0].Candidates != 1 || next[0].Token <= hs[0].Token {
		t.Fatalf("after a resigned: %+v %v", next, err)
	}
}
