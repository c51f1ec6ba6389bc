package agent

import (
	"regexp"
	"testing"
	"time"
)

func TestReloadingNotifiesSystemd(t *testing.T) {
	conn, sock := notifySocket(t)
	read := func() string {
		t.Helper()
		buf := make([]byte, 128)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	done := Reloading(sock)
	// systemd (Type=notify-reload) wants the monotonic clock with it.
	if got := read(); !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`).MatchString(got) {
		t.Errorf("reload start: %q", got)
	}
	done()
	if got := read(); got != "READY=1" {
		t.Errorf("reload end: %q, want READY=1", got)
	}
}
