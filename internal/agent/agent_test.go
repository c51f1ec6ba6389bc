package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

type log struct {
	mu     sync.Mutex
	events []string
}

func (l *log) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, s)
}

func (l *log) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

type part struct {
	name     string
	log      *log
	startErr error
	ready    bool
	fail     func(error)
}

func (p *part) Name() string { return p.name }
func (p *part) Start(_ context.Context, fail func(error)) error {
	if p.startErr != nil {
		p.log.add("start-failed " + p.name)
		return p.startErr
	}
	p.fail = fail
	p.log.add("start " + p.name)
	return nil
}
func (p *part) Stop(context.Context) error { p.log.add("stop " + p.name); return nil }
func (p *part) Status() any                { return map[string]string{"name": p.name} }
func (p *part) Ready() bool                { return p.ready }

func TestStartOrderAndReverseStop(t *testing.T) {
	l := &log{}
	parts := []Part{&part{name: "etcd", log: l, ready: true}, &part{name: "lb", log: l, ready: true}, &part{name: "vip", log: l, ready: true}}
	a, err := New(Config{Parts: parts, APIAddr: "127.0.0.1:0", APISocket: filepath.Join(t.TempDir(), "api.sock")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	<-a.Started()
	addrs, _ := a.APIAddrs(ctx)
	for _, path := range []string{"/healthz", "/readyz", "/status", "/metrics"} {
		resp, err := http.Get("http://" + addrs[0] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
		if path == "/status" && (!strings.Contains(string(body), `"vip"`) || !strings.Contains(string(body), `"ready": true`)) {
			t.Errorf("/status = %s", body)
		}
		if path == "/metrics" && !strings.Contains(string(body), "go_goroutines") {
			t.Errorf("/metrics lacks go collectors")
		}
	}
	// The unix socket serves the same API.
	uc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", addrs[1])
	}}}
	resp, err := uc.Get("http://agent/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("unix socket: %v", err)
	}
	resp.Body.Close()
	// A part that is not ready makes /readyz fail.
	parts[1].(*part).ready = false
	resp, _ = http.Get("http://" + addrs[0] + "/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with an unready part: %d", resp.StatusCode)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("clean shutdown returned %v", err)
	}
	want := []string{"start etcd", "start lb", "start vip", "stop vip", "stop lb", "stop etcd"}
	if got := l.get(); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestFailedStartUndoes(t *testing.T) {
	l := &log{}
	boom := errors.New("address in use")
	a, _ := New(Config{APIAddr: "127.0.0.1:0", Parts: []Part{&part{name: "etcd", log: l}, &part{name: "lb", log: l, startErr: boom}, &part{name: "vip", log: l}}})
	err := a.Run(context.Background())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "start lb") {
		t.Fatalf("err = %v", err)
	}
	want := []string{"start etcd", "start-failed lb", "stop etcd"}
	if got := l.get(); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestPartFailureStopsAgent(t *testing.T) {
	l := &log{}
	p := &part{name: "lb", log: l}
	a, _ := New(Config{APIAddr: "-", Parts: []Part{&part{name: "etcd", log: l}, p}})
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	<-a.Started()
	p.fail(errors.New("listener closed"))
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "lb failed: listener closed") {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not stop after a part failed")
	}
	if got := l.get(); !slices.Equal(got, []string{"start etcd", "start lb", "stop lb", "stop etcd"}) {
		t.Errorf("events %v", got)
	}
}

// notifySocket stands in for systemd's notification socket at the path it
// returns.
func notifySocket(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, sock
}

func TestNotifySystemd(t *testing.T) {
	conn, sock := notifySocket(t)
	a, _ := New(Config{APIAddr: "-", NotifySocket: sock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	buf := make([]byte, 64)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notify: %q %v", buf[:n], err)
	}
	cancel()
	<-done
}

func TestDuplicatePartNames(t *testing.T) {
	if _, err := New(Config{Parts: []Part{&part{name: "a"}, &part{name: "a"}}}); err == nil {
		t.Fatal("duplicate names accepted")
	}
}
