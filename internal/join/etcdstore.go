package join

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdStore keeps tokens in etcd under Prefix, shared by every control-plane
// node. A token is consumed with a compare-and-swap on its key's revision,
// so two nodes answering the same token concurrently cannot both accept it.
// Each key carries a lease that outlives the token by a day, so etcd
// deletes stale tokens by itself.
type EtcdStore struct {
	Client  *clientv3.Client
	Prefix  string        // default "/haplane/join-tokens/"
	Timeout time.Duration // per operation; default 5s
}

func (s *EtcdStore) prefix() string {
	if s.Prefix == "" {
		return "/haplane/join-tokens/"
	}
	return s.Prefix
}

func (s *EtcdStore) ctx() (context.Context, context.CancelFunc) {
	t := s.Timeout
	if t == 0 {
		t = 5 * time.Second
	}
	return context.WithTimeout(context.Background(), t)
}

// Create implements TokenStore.
func (s *EtcdStore) Create(cluster string, ttl time.Duration, now time.Time) (Token, error) {
	if ttl <= 0 {
		return Token{}, fmt.Errorf("join: token ttl must be positive, got %s", ttl)
	}
	t, err := NewToken()
	if err != nil {
		return Token{}, err
	}
	st := storedToken{ID: t.ID, SecretHash: hashSecret(t.Secret), Cluster: cluster, Expires: now.Add(ttl)}
	data, _ := json.Marshal(st)
	ctx, cancel := s.ctx()
	defer cancel()
	lease, err := s.Client.Grant(ctx, int64((ttl+24*time.Hour)/time.Second))
	if err != nil {
		return Token{}, fmt.Errorf("join: token lease: %w", err)
	}
	key := s.prefix() + t.ID
	resp, err := s.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(data), clientv3.WithLease(lease.ID))).
		Commit()
	if err != nil {
		return Token{}, fmt.Errorf("join: store token: %w", err)
	}
	if !resp.Succeeded {
		return Token{}, fmt.Errorf("join: token id %s exists already; try again", t.ID)
	}
	return t, nil
}

// get reads the stored token with tok's id and the revision it was read at.
func (s *EtcdStore) get(ctx context.Context, tok Token) (storedToken, int64, error) {
	var st storedToken
	get, err := s.Client.Get(ctx, s.prefix()+tok.ID)
	if err != nil {
		return st, 0, fmt.Errorf("join: read token: %w", err)
	}
	if len(get.Kvs) == 0 {
		return st, 0, ErrTokenUnknown
	}
	kv := get.Kvs[0]
	if err := json.Unmarshal(kv.Value, &st); err != nil {
		return st, 0, fmt.Errorf("join: token %s is damaged: %w", tok.ID, err)
	}
	return st, kv.ModRevision, nil
}

// Check implements TokenStore.
func (s *EtcdStore) Check(tok Token, cluster string, now time.Time) error {
	ctx, cancel := s.ctx()
	defer cancel()
	st, _, err := s.get(ctx, tok)
	if err != nil {
		return err
	}
	return st.check(tok, cluster, now)
}

// Consume implements TokenStore.
func (s *EtcdStore) Consume(tok Token, cluster, who string, now time.Time) error {
	ctx, cancel := s.ctx()
	defer cancel()
	key := s.prefix() + tok.ID
	st, rev, err := s.get(ctx, tok)
	if err != nil {
		return err
	}
	if err := st.consume(tok, cluster, who, now); err != nil {
		return err
	}
	data, _ := json.Marshal(st)
	resp, err := s.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(data), clientv3.WithIgnoreLease())).
		Commit()
	if err != nil {
		return fmt.Errorf("join: consume token: %w", err)
	}
	if !resp.Succeeded {
		return ErrTokenUsed // another node consumed it between our read and write
	}
	return nil
}

// List implements TokenStore.
func (s *EtcdStore) List() ([]TokenInfo, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.Client.Get(ctx, s.prefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("join: list tokens: %w", err)
	}
	var out []TokenInfo
	for _, kv := range resp.Kvs {
		var st storedToken
		if json.Unmarshal(kv.Value, &st) == nil {
			out = append(out, st.info())
		}
	}
	return out, nil
}
