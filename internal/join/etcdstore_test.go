package join

import (
	"errors"
	"strings"
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
	raceConsume(t, tok, 16, a, b)
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
