package testetcd

import (
	"context"
	"testing"
	"time"
)

// TestStartServesAndCloses: the member takes a write and serves it back,
// and after Close (twice: the second does nothing) it answers no more.
func TestStartServesAndCloses(t *testing.T) {
	m := Start(t, nil)
	cli := m.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get k = %v (%v)", resp, err)
	}
	m.Close()
	m.Close()
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if _, err := cli.Get(short, "k"); err == nil {
		t.Fatal("a closed member still answers")
	}
}
