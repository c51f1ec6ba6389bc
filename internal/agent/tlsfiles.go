package agent

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// keyPairFiles serves a certificate and key from files, loading them again
// when either file changes (a renewal), so a TLS server presents the new
// certificate on its next handshake without a restart. Each handshake
// costs two stat calls; a pair that fails to load (a file half replaced by
// a writer that does not rename) keeps the last good one in service.
type keyPairFiles struct {
	CertFile, KeyFile string
	// Chain is appended to the leaf (e.g. the CA, which joiners pin).
	Chain [][]byte

	mu   sync.Mutex // protects cert and seen
	cert *tls.Certificate
	seen [2]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(p string) (fileStamp, error) {
	st, err := os.Stat(p)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{st.ModTime(), st.Size()}, nil
}

// Get returns the current pair.
func (k *keyPairFiles) Get() (*tls.Certificate, error) {
	cs, err1 := stamp(k.CertFile)
	ks, err2 := stamp(k.KeyFile)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err1 == nil && err2 == nil && k.cert != nil && k.seen == [2]fileStamp{cs, ks} {
		return k.cert, nil
	}
	c, err := tls.LoadX509KeyPair(k.CertFile, k.KeyFile)
	if err != nil {
		if k.cert != nil {
			return k.cert, nil
		}
		return nil, fmt.Errorf("load %s: %w", k.CertFile, err)
	}
	c.Certificate = append(c.Certificate, k.Chain...)
	k.cert, k.seen = &c, [2]fileStamp{cs, ks}
	return k.cert, nil
}
