package elect

import (
	"context"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Holder is the current leader of one election under Prefix.
type Holder struct {
	// Lock is the election's name, as given to Lead.
	Lock string `json:"lock"`
	// Identity is what the leader published.
	Identity string `json:"identity"`
	// Token is the leader's fencing token: its key's create revision.
	Token int64 `json:"token"`
	// Lease is the etcd lease the leader's key is bound to.
	Lease int64 `json:"lease"`
	// Candidates counts the keys campaigning, the leader's included.
	Candidates int `json:"candidates"`
}

// Holders lists the leader of every election that has a candidate, sorted
// by lock: per election, the key with the lowest create revision, as
// concurrency.Election.Leader and Leader pick it.
func Holders(ctx context.Context, cli *clientv3.Client) ([]Holder, error) {
	resp, err := cli.Get(ctx, Prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("elect: list elections: %w", err)
	}
	var out []Holder
	index := map[string]int{}
	for _, kv := range resp.Kvs {
		// A candidate's key is Prefix + lock + "/" + its lease in hex; the
		// lock may itself contain slashes.
		i := strings.LastIndexByte(string(kv.Key), '/')
		if i <= len(Prefix) {
			continue
		}
		lock := string(kv.Key[len(Prefix):i])
		if j, ok := index[lock]; ok {
			out[j].Candidates++ // a later create revision: a waiting candidate
			continue
		}
		index[lock] = len(out)
		out = append(out, Holder{Lock: lock, Identity: string(kv.Value), Token: kv.CreateRevision, Lease: kv.Lease, Candidates: 1})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Lock < out[j].Lock })
	return out, nil
}
