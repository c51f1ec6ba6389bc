package lb

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The scale test re-executes this test binary in roles, because one
// process may hold only 20,000 descriptors here and 10,000 proxied
// sessions need 20,000 sockets in the proxy alone.
const roleEnv = "HAPLANE_LB_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role); err != nil {
			fmt.Fprintln(os.Stderr, "role", role+":", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runRole runs one child. Each prints a line when ready; the backend and
// proxies serve until their stdin closes, clients until killed. On a
// "stat" line the proxy prints its sessions and RSS.
func runRole(role string) error {
	ctx := context.Background()
	out := bufio.NewWriter(os.Stdout)
	say := func(f string, a ...any) { fmt.Fprintf(out, f+"\n", a...); out.Flush() }
	in := bufio.NewScanner(os.Stdin)
	switch role {
	case "backend": // echo server
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		serveConns(ln, func(c net.Conn) {
			b := make([]byte, 16)
			for {
				n, err := c.Read(b)
				if err != nil {
					return
				}
				c.Write(b[:n])
			}
		})
		say("ready %s", ln.Addr())
		for in.Scan() {
		}
	case "proxy":
		// A generous connect timeout: this test is about holding sessions,
		// and under -race on two shared cores the one backend can take
		// longer than the default 500ms to accept a burst of thousands.
		l, err := New(Config{Frontends: []string{os.Getenv("FRONTEND")}, Backends: []string{os.Getenv("BACKEND")}, ReusePort: true, ConnectTimeout: 10 * time.Second})
		if err != nil {
			return err
		}
		if err := l.Listen(ctx); err != nil {
			return err
		}
		go l.Serve(ctx)
		runtime.GC()
		say("ready %d", rssKB())
		for in.Scan() {
			runtime.GC()
			var active int64
			for _, b := range l.Backends() {
				active += b.Active
			}
			say("active %d rss %d", active, rssKB())
		}
	case "client": // opens N connections, one byte round trip on each
		n, _ := strconv.Atoi(os.Getenv("CONNS"))
		conns := make([]net.Conn, 0, n)
		for i := range n {
			c, err := net.DialTimeout("tcp", os.Getenv("TARGET"), 5*time.Second)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			conns = append(conns, c)
		}
		b := []byte{1}
		for i, c := range conns {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(b); err != nil {
				return fmt.Errorf("write %d: %w", i, err)
			}
			if _, err := io.ReadFull(c, b); err != nil {
				return fmt.Errorf("echo %d: %w", i, err)
			}
		}
		say("held %d", len(conns))
		// Hold until killed by the test (or by the parent's death, via
		// Pdeathsig): not on stdin, which was seen to end early under load.
		for {
			time.Sleep(time.Hour)
			runtime.KeepAlive(conns)
		}
	default:
		return fmt.Errorf("unknown role")
	}
	return nil
}

func rssKB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}

// child is a re-executed role process talking line by line.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
}

func startChild(t *testing.T, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(), append(env, roleEnv+"="+role)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}
	t.Cleanup(func() {
		stdin.Close()
		if role == "client" {
			cmd.Process.Kill() // our own child, by its PID
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill() // only our own child, by its PID
			<-done
		}
	})
	return c
}

// line reads the child's next line within d.
func (c *child) line(t *testing.T, d time.Duration) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		if c.lines.Scan() {
			got <- c.lines.Text()
		} else {
			got <- ""
		}
	}()
	select {
	case s := <-got:
		if s == "" {
			t.Fatalf("child %s exited early", c.cmd.Path)
		}
		return s
	case <-time.After(d):
		t.Fatalf("child silent for %v", d)
	}
	return ""
}

// TestTenThousandIdleSessions holds 10,000 idle sessions through the load
// balancer, each proven end to end by a one-byte echo, and reports the
// proxy's memory per session. Two proxy processes share the frontend with
// SO_REUSEPORT because of the per-process descriptor limit.
func TestTenThousandIdleSessions(t *testing.T) {
	const total, clients, proxies = 10000, 2, 2
	be := startChild(t, "backend")
	backend := strings.TrimPrefix(be.line(t, 10*time.Second), "ready ")
	free := listenLoopback(t)
	front := free.Addr().String()
	free.Close()
	var px []*child
	base := make([]int, proxies)
	for i := range proxies {
		p := startChild(t, "proxy", "FRONTEND="+front, "BACKEND="+backend)
		fmt.Sscanf(p.line(t, 10*time.Second), "ready %d", &base[i])
		px = append(px, p)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for range clients {
		c := startChild(t, "client", "TARGET="+front, fmt.Sprint("CONNS=", total/clients))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.line(t, 60*time.Second)
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		if e != fmt.Sprintf("held %d", total/clients) {
			t.Fatalf("client: %q", e)
		}
	}
	t.Logf("%d sessions established and echoed in %v", total, time.Since(start).Round(time.Millisecond))
	stat := func(log bool) (held int64, grown int) {
		for i, p := range px {
			fmt.Fprintln(p.stdin, "stat")
			var active int64
			var rss int
			fmt.Sscanf(p.line(t, 10*time.Second), "active %d rss %d", &active, &rss)
			if log {
				t.Logf("proxy %d: %d sessions, RSS %d kB (was %d kB)", i, active, rss, base[i])
			}
			held += active
			grown += rss - base[i]
		}
		return held, grown
	}
	held, grown := stat(true)
	if held != total {
		// Say whether sessions are still being set up or were lost.
		time.Sleep(time.Second)
		again, _ := stat(true)
		t.Fatalf("proxies hold %d sessions, then %d a second later, want %d", held, again, total)
	}
	perConn := float64(grown) * 1024 / float64(total)
	t.Logf("memory per idle session: %.1f KiB (RSS growth, user space; socket buffers are kernel memory)", perConn/1024)
	if perConn > 64*1024 && !raceEnabled {
		t.Errorf("%.0f bytes per idle session; expected far less than 64 KiB", perConn)
	}
}
