package lb

import "errors"

// The handshake phase of a session (see Config.HandshakeTimeout) runs in
// its event loop (lsess.watch, handshakeBytes, replayElsewhere); what is
// here is its view of TLS.

var (
	errHandshakeTimeout   = errors.New("no answer to the ClientHello within the handshake timeout")
	errClosedBeforeAnswer = errors.New("closed the connection before answering")
)

// maxRecord is the largest TLS record (RFC 8446 §5.1: 2^14 bytes of
// plaintext) with the room an encrypted one may take; a ClientHello is
// sent in the clear and is far smaller.
const maxRecord = 1<<14 + 2048

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
