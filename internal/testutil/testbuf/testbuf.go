// Package testbuf is a byte buffer safe for concurrent use: the sink of a
// logger or a child process's output that a test reads while it is being
// written. Only tests import it.
package testbuf

import (
	"bytes"
	"sync"
)

// Buffer collects what is written to it. Its zero value is ready to use.
type Buffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Bytes returns a copy of everything written so far.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.b.Bytes())
}
