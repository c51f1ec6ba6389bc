// Package join moves a new control-plane host into the cluster without scp:
// single-use join tokens stored only as hashes, a client that pins the
// cluster CA by the hash of its public key before it says anything, CSRs
// signed by a node holding the CA keys (the joiner's private keys never leave
// it), and the shared keys (CA, service-account and front-proxy keys) sealed
// with HPKE to a key the joiner made for this join alone.
//
// The package owns the protocol and the token store. Which certificates a
// node gets, and with which names, is the Signer's business (the agent wires
// internal/pki in); where files land is the caller's.
package join

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// Token errors; the server maps them to a refusal without saying which one
// applied (a prober learns nothing), and logs the precise one.
var (
	ErrTokenFormat  = errors.New("join: token must look like abcdef.0123456789abcdef")
	ErrTokenUnknown = errors.New("join: unknown token")
	ErrTokenSecret  = errors.New("join: wrong token secret")
	ErrTokenExpired = errors.New("join: token expired")
	ErrTokenUsed    = errors.New("join: token already used")
	ErrTokenCluster = errors.New("join: token belongs to another cluster")
)

var tokenRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

// Token is a join token, "ID.SECRET" (kubeadm's bootstrap-token shape).
type Token struct {
	ID     string
	Secret string
}

func (t Token) String() string { return t.ID + "." + t.Secret }

// ParseToken parses "ID.SECRET".
func ParseToken(s string) (Token, error) {
	m := tokenRE.FindStringSubmatch(s)
	if m == nil {
		return Token{}, ErrTokenFormat
	}
	return Token{ID: m[1], Secret: m[2]}, nil
}

const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		// 256 % 36 = 4: the bias is below 2% per character and the secret
		// keeps over 80 bits; fine for a single-use, short-lived token.
		b[i] = tokenAlphabet[int(b[i])%len(tokenAlphabet)]
	}
	return string(b), nil
}

// NewToken makes a random token.
func NewToken() (Token, error) {
	id, err := randomString(6)
	if err != nil {
		return Token{}, fmt.Errorf("join: token: %w", err)
	}
	secret, err := randomString(16)
	if err != nil {
		return Token{}, fmt.Errorf("join: token: %w", err)
	}
	return Token{ID: id, Secret: secret}, nil
}

// storedToken is what the store keeps: never the secret, only its hash.
type storedToken struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secretSHA256"`
	Cluster    string    `json:"cluster"`
	Expires    time.Time `json:"expires"`
	UsedAt     time.Time `json:"usedAt,omitzero"`
	UsedBy     string    `json:"usedBy,omitempty"`
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TokenStore keeps join tokens as hashes and consumes each at most once.
// EtcdStore shares tokens between every control-plane node, so a token made
// on one is honoured by whichever node holds the VIP; it is the only store
// haplane's commands and agent use. Store (a file) serves processes on one
// host that share the file.
//
// Check and Consume fail with one of the ErrToken errors. The server calls
// Check first and Consume only once everything else about a join has been
// accepted, so a refused join leaves the token as it was; Consume re-checks
// and marks the token used atomically, so of two joins that passed Check
// with the same token only one succeeds.
type TokenStore interface {
	Create(cluster string, ttl time.Duration, now time.Time) (Token, error)
	Check(tok Token, cluster string, now time.Time) error
	Consume(tok Token, cluster, who string, now time.Time) error
	List() ([]TokenInfo, error)
}

// Store keeps tokens in a JSON file, for processes on one host that share
// it (a join server of its own, tests). Every change holds an exclusive
// flock on the file and replaces it atomically, so two processes never both
// consume a token.
type Store struct {
	Path string

	mu sync.Mutex // serialises this process's users; flock covers others
}

// Create adds a token for cluster that expires after ttl and returns it.
// The secret is returned once and stored only as a hash.
func (s *Store) Create(cluster string, ttl time.Duration, now time.Time) (Token, error) {
	if ttl <= 0 {
		return Token{}, fmt.Errorf("join: token ttl must be positive, got %s", ttl)
	}
	t, err := NewToken()
	if err != nil {
		return Token{}, err
	}
	err = s.update(func(list []storedToken) ([]storedToken, error) {
		list = prune(list, now)
		return append(list, storedToken{ID: t.ID, SecretHash: hashSecret(t.Secret), Cluster: cluster, Expires: now.Add(ttl)}), nil
	})
	return t, err
}

// Check reports whether tok is valid for cluster now, changing nothing.
func (s *Store) Check(tok Token, cluster string, now time.Time) error {
	return s.update(func(list []storedToken) ([]storedToken, error) {
		for _, st := range list {
			if st.ID == tok.ID {
				return nil, st.check(tok, cluster, now)
			}
		}
		return nil, ErrTokenUnknown
	})
}

// Consume checks tok for cluster and marks it used by who. It fails with one
// of the ErrToken errors; a token is consumed at most once.
func (s *Store) Consume(tok Token, cluster, who string, now time.Time) error {
	return s.update(func(list []storedToken) ([]storedToken, error) {
		for i := range list {
			if list[i].ID != tok.ID {
				continue
			}
			if err := list[i].consume(tok, cluster, who, now); err != nil {
				return nil, err
			}
			return list, nil
		}
		return nil, ErrTokenUnknown
	})
}

// consume checks tok against st and marks st used.
func (st *storedToken) consume(tok Token, cluster, who string, now time.Time) error {
	if err := st.check(tok, cluster, now); err != nil {
		return err
	}
	st.UsedAt, st.UsedBy = now, who
	return nil
}

// check checks tok against st.
func (st *storedToken) check(tok Token, cluster string, now time.Time) error {
	if subtle.ConstantTimeCompare([]byte(st.SecretHash), []byte(hashSecret(tok.Secret))) != 1 {
		return ErrTokenSecret
	}
	switch {
	case !st.UsedAt.IsZero():
		return ErrTokenUsed
	case !now.Before(st.Expires):
		return ErrTokenExpired
	case st.Cluster != cluster:
		return ErrTokenCluster
	}
	return nil
}

func (st storedToken) info() TokenInfo {
	return TokenInfo{ID: st.ID, Cluster: st.Cluster, Expires: st.Expires, Used: !st.UsedAt.IsZero(), UsedBy: st.UsedBy}
}

// TokenInfo describes a stored token without its secret.
type TokenInfo struct {
	ID      string    `json:"id"`
	Cluster string    `json:"cluster"`
	Expires time.Time `json:"expires"`
	Used    bool      `json:"used"`
	UsedBy  string    `json:"usedBy,omitempty"`
}

// List returns the stored tokens.
func (s *Store) List() ([]TokenInfo, error) {
	var out []TokenInfo
	err := s.update(func(list []storedToken) ([]storedToken, error) {
		for _, st := range list {
			out = append(out, st.info())
		}
		return nil, nil
	})
	return out, err
}

// prune drops tokens that expired or were used over a day ago.
func prune(list []storedToken, now time.Time) []storedToken {
	out := list[:0]
	for _, st := range list {
		if now.Sub(st.Expires) > 24*time.Hour {
			continue
		}
		out = append(out, st)
	}
	return out
}

// update runs fn on the stored list under an exclusive lock and writes the
// list fn returns; a nil list with a nil error leaves the file unchanged.
func (s *Store) update(fn func([]storedToken) ([]storedToken, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return fmt.Errorf("join: token store: %w", err)
	}
	lock, err := os.OpenFile(s.Path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("join: token store: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("join: token store lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	var list []storedToken
	data, err := os.ReadFile(s.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("join: token store: %w", err)
	default:
		if err := json.Unmarshal(data, &list); err != nil {
			return fmt.Errorf("join: token store %s is damaged: %w", s.Path, err)
		}
	}
	next, err := fn(list)
	if err != nil || next == nil {
		return err
	}
	out, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.Path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("join: token store: %w", err)
	}
	_, werr := f.Write(out)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("join: token store: %w", werr)
	}
	if err := os.Rename(tmp, s.Path); err != nil {
		return fmt.Errorf("join: token store: %w", err)
	}
	return nil
}
