package join

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haplane/haplane/internal/testutil/testetcd"
)

func TestEtcdStoreConsumesOnceAcrossNodes(t *testing.T) {
	cli := testetcd.Start(t, nil).Client(t)
	// Two stores, as on two control-plane nodes.
	a, b := &EtcdStore{Client: cli}, &EtcdStore{Client: cli}
	now := time.Now()
	tok, err := a.Create("lab", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	// Check changes nothing: the key keeps its revision and the token
	// stays usable.
	key := "/haplane/join-tokens/" + tok.ID
	rev := func() int64 {
		resp, err := cli.Get(t.Context(), key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s: %v %v", key, resp, err)
		}
		return resp.Kvs[0].ModRevision
	}
	r0 := rev()
	for range 3 {
		if err := b.Check(tok, "lab", now); err != nil {
			t.Fatalf("Check(valid token) = %v", err)
		}
	}
	if r := rev(); r != r0 {
		t.Fatalf("Check wrote the token: revision %d -> %d", r0, r)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			err := s.Consume(tok, "lab", fmt.Sprint(i), time.Now())
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, ErrTokenUsed):
				t.Errorf("loser %d: %v, want ErrTokenUsed", i, err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners, want 1", wins.Load())
	}
	if err := a.Check(tok, "lab", now); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("Check(used token) = %v, want ErrTokenUsed", err)
	}
	expired, _ := a.Create("lab", time.Minute, now.Add(-time.Hour))
	other, _ := a.Create("prod", time.Hour, now)
	wrong := other
	wrong.Secret = "aaaaaaaaaaaaaaaa"
	for _, tc := range []struct {
		tok  Token
		want error
	}{
		{expired, ErrTokenExpired},
		{other, ErrTokenCluster},
		{wrong, ErrTokenSecret},
		{Token{ID: "zzzzzz", Secret: "zzzzzzzzzzzzzzzz"}, ErrTokenUnknown},
	} {
		if err := b.Check(tc.tok, "lab", now); !errors.Is(err, tc.want) {
			t.Errorf("Check(%s) = %v, want %v", tc.tok.ID, err, tc.want)
		}
		if err := b.Consume(tc.tok, "lab", "x", now); !errors.Is(err, tc.want) {
			t.Errorf("Consume(%s) = %v, want %v", tc.tok.ID, err, tc.want)
		}
	}
	list, err := b.List()
	if err != nil || len(list) != 3 {
		t.Fatalf("List = %v, %v", list, err)
	}
	// The stored value never holds the secret.
	resp, _ := cli.Get(t.Context(), "/haplane/join-tokens/"+tok.ID)
	if len(resp.Kvs) != 1 || strings.Contains(string(resp.Kvs[0].Value), tok.Secret) {
		t.Fatalf("stored token leaks its secret: %s", resp.Kvs[0].Value)
	}
}
