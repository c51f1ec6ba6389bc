package lb

import (
	"errors"
	"io"
	"os"
	"time"
)

// clientFirstWait bounds how long the handshake phase waits for the
// client's first bytes. A TLS client sends its ClientHello as soon as TCP
// is up, usually before the backend connect is done; a client that says
// nothing (a protocol where the server speaks first) goes on to the plain
// copy after this, without replay.
const clientFirstWait = 200 * time.Millisecond

// handshake runs a session's first exchange on the handler's goroutine:
// the client's first bytes to the backend, the backend's first answer to
// the client. When the client's first bytes are exactly one TLS handshake
// record (its ClientHello) and the backend closes, resets or stays silent
// for hs before its first byte, the backend is made suspect and the
// session moves to another backend, where the ClientHello is replayed.
// That is safe because nothing of the session has happened yet: a TLS
// server does nothing before it answers the ClientHello.
//
// It reports false when the session is over (closed by a drain or a
// shutdown, or no backend left to try); the caller then releases it.
func (l *LB) handshake(s *session, hs time.Duration, tried []*Backend) bool {
	first, replayable, err := s.up.readFirst(clientFirstWait)
	if len(first) == 0 {
		// Nothing yet (a quiet client), or the client already ended:
		// the plain copy takes it from here and sees the same.
		return !s.isClosed()
	}
	if !replayable || err != nil {
		n, werr := s.up.dst.Write(first)
		s.up.counter.Add(uint64(n))
		if werr != nil {
			s.close()
			return false
		}
		return true
	}
	for {
		n, werr := s.up.dst.Write(first)
		s.up.counter.Add(uint64(n))
		var rerr error
		if werr == nil {
			_ = s.down.src.SetReadDeadline(time.Now().Add(hs))
			rerr = s.down.step()
			_ = s.down.src.SetReadDeadline(time.Time{})
			if rerr == nil {
				return true // the backend answered: the session is its
			}
			if s.down.n > 0 {
				// The backend answered but the client is gone.
				s.close()
				return false
			}
		}
		if s.isClosed() {
			return false // drained or shut down: not the backend's fault
		}
		s.mu.Lock()
		b := s.b
		s.mu.Unlock()
		why := werr
		if why == nil {
			why = rerr
		}
		if errors.Is(why, os.ErrDeadlineExceeded) {
			why = errHandshakeTimeout
		} else if why == io.EOF {
			why = errClosedBeforeAnswer
		}
		b.suspect(l.tun.Load())
		l.cfg.Logger.Warn("lb: backend failed before answering the TLS handshake; replaying it elsewhere", "backend", b.addr, "err", why)
		tried = append(tried, b)
		l.detach(s)
		nb, nbc := l.connect(s.client, nil, &tried)
		if nb == nil {
			s.close()
			return false
		}
		l.replays.Add(1)
		if !l.attach(s, nb, nbc) {
			return false
		}
	}
}

var (
	errHandshakeTimeout   = errors.New("no answer to the ClientHello within the handshake timeout")
	errClosedBeforeAnswer = errors.New("closed the connection before answering")
)

// maxRecord is the largest TLS record (RFC 8446 §5.1: 2^14 bytes of
// plaintext) with the room an encrypted one may take; a ClientHello is
// sent in the clear and is far smaller.
const maxRecord = 1<<14 + 2048

// readFirst reads the client's first bytes, waiting at most wait for the
// first of them. When they begin a TLS handshake record it reads on until
// the record is whole; replayable is true when the bytes are exactly that
// one record (the ClientHello). A read error after some bytes returns them
// with the error.
func (p *pump) readFirst(wait time.Duration) (first []byte, replayable bool, err error) {
	for {
		var err error
		ready := false
		if first == nil {
			// Usually the bytes are queued already (they came with or
			// just after the TCP handshake): one attempt without a
			// deadline, which would cost two timer updates per session.
			err = p.src.rc.Control(func(fd uintptr) { ready = p.read(fd) })
			if err == nil && !ready {
				_ = p.src.SetReadDeadline(time.Now().Add(wait))
				err = p.src.rc.Read(p.readFn)
				_ = p.src.SetReadDeadline(time.Time{})
			}
		} else {
			err = p.src.rc.Read(p.readFn)
		}
		bp := p.bp
		p.bp = nil
		if err == nil && p.rerr != nil {
			err = os.NewSyscallError("read", p.rerr)
		}
		if err == nil && p.n == 0 {
			err = io.EOF
		}
		if err == nil {
			first = append(first, (*bp)[:p.n]...)
		}
		if bp != nil {
			bufPool.Put(bp)
		}
		if err != nil {
			return first, false, err
		}
		need, ok := tlsRecordLen(first)
		switch {
		case !ok:
			return first, false, nil
		case len(first) >= need:
			return first, len(first) == need, nil
		}
	}
}

// tlsRecordLen says whether b starts like a TLS handshake record (type
// 22, version 3.x, a plausible length) and how long the record is: 5 when
// its header is not complete yet.
func tlsRecordLen(b []byte) (int, bool) {
	if len(b) == 0 || b[0] != 0x16 {
		return 0, false
	}
	if len(b) < 5 {
		if len(b) >= 2 && b[1] != 3 {
			return 0, false
		}
		return 5, true
	}
	n := int(b[3])<<8 | int(b[4])
	if b[1] != 3 || n == 0 || n > maxRecord {
		return 0, false
	}
	return 5 + n, true
}
