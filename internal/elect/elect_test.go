package elect

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/testutil/testetcd"
)

// TestOneLeaderTokensIncrease runs three candidates that each lead briefly
// and give way: never two at once, and every new term's token is larger.
func TestOneLeaderTokensIncrease(t *testing.T) {
	ep := testetcd.Start(t, nil).URL
	var leading atomic.Int32
	var mu sync.Mutex
	var tokens []int64
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cli := testetcd.Client(t, ep)
			for range 3 {
				err := Lead(context.Background(), Config{Client: cli, Lock: "test", Identity: string(rune('a' + i)), TTL: 2 * time.Second},
					func(ctx context.Context, term Term) error {
						if n := leading.Add(1); n != 1 {
							t.Errorf("%d leaders at once", n)
						}
						mu.Lock()
						tokens = append(tokens, term.Token)
						mu.Unlock()
						time.Sleep(30 * time.Millisecond)
						leading.Add(-1)
						return nil
					})
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if len(tokens) != 9 {
		t.Fatalf("%d terms, want 9", len(tokens))
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("tokens not increasing: %v", tokens)
		}
	}
}

// TestLostWhenEtcdGoes: with etcd gone, the leader cannot renew and gives
// up before the lease could expire.
func TestLostWhenEtcdGoes(t *testing.T) {
	member := testetcd.Start(t, nil)
	ep := member.URL
	cli := testetcd.Client(t, ep)
	ttl := 3 * time.Second
	errc := make(chan error, 1)
	var lostAt atomic.Int64 // unix nanos when the leadership context ended
	leading := make(chan struct{})
	go func() {
		errc <- Lead(context.Background(), Config{Client: cli, Lock: "lost", Identity: "a", TTL: ttl, Margin: time.Second},
			func(ctx context.Context, term Term) error {
				close(leading)
				<-ctx.Done()
				lostAt.Store(time.Now().UnixNano())
				return nil
			})
	}()
	<-leading
	member.Close()
	closedAt := time.Now()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrLost) {
			t.Fatalf("err = %v, want ErrLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("leader did not give up after etcd went away")
	}
	// The last renewal happened before etcd stopped: giving up within
	// ttl - margin of the stop is early enough.
	// (Closing etcd takes a while; the leader may give up before it ends.)
	if lostAfter := time.Unix(0, lostAt.Load()).Sub(closedAt); lostAfter > ttl-time.Second {
		t.Errorf("gave up %s after etcd went away; want within ttl - margin (%s)", lostAfter, ttl-time.Second)
	}
}

func TestLeaderLookupAndValidation(t *testing.T) {
	ep := testetcd.Start(t, nil).URL
	cli := testetcd.Client(t, ep)
	if id, _, err := Leader(context.Background(), cli, "none"); err != nil || id != "" {
		t.Fatalf("empty lock: %q %v", id, err)
	}
	err := Lead(context.Background(), Config{Client: cli, Lock: "l", Identity: "me", TTL: 2 * time.Second}, func(ctx context.Context, term Term) error {
		id, tok, err := Leader(ctx, cli, "l")
		if err != nil || id != "me" || tok != term.Token {
			t.Errorf("Leader = %q %d %v; want me %d", id, tok, err, term.Token)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{Lock: "l", Identity: "x"}, {Client: cli, Identity: "x"}, {Client: cli, Lock: "l"}, {Client: cli, Lock: "l", Identity: "x", TTL: time.Second}} {
		if err := Lead(context.Background(), c, nil); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}
