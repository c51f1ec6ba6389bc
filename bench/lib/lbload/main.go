// Command lbload is the load client of bench/lb.sh for what wrk cannot do:
//
//	-mode tls:  a new TCP connection and a full TLS handshake (no session
//	            resumption) per request, GET / with Connection: close;
//	            prints requests per second.
//	-mode bulk: -c long connections each streaming GET /bulk; prints MB/s.
//
// It runs for -d and prints one line: "<rate> <unit> errors=<n>".
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	mode := flag.String("mode", "tls", "tls or bulk")
	target := flag.String("target", "", "host:port")
	conc := flag.Int("c", 32, "concurrent connections")
	dur := flag.Duration("d", 5*time.Second, "duration")
	caFile := flag.String("ca", "", "CA verifying the server (default: no verification)")
	flag.Parse()
	if *target == "" {
		log.Fatal("-target is required")
	}
	tcfg := &tls.Config{InsecureSkipVerify: true, ServerName: "kubernetes"} //nolint:gosec // benchmark, -ca verifies
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			log.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tcfg = &tls.Config{RootCAs: pool, ServerName: "kubernetes"}
	}
	end := time.Now().Add(*dur)
	var done, errs, bytes atomic.Int64
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch *mode {
			case "tls":
				for time.Now().Before(end) {
					if err := tlsRequest(*target, tcfg, end); err != nil {
						errs.Add(1)
						continue
					}
					done.Add(1)
				}
			case "bulk":
				n, err := bulk(*target, end)
				bytes.Add(n)
				if err != nil {
					errs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	secs := dur.Seconds()
	switch *mode {
	case "tls":
		fmt.Printf("%.1f req/s errors=%d\n", float64(done.Load())/secs, errs.Load())
	case "bulk":
		fmt.Printf("%.1f MB/s errors=%d\n", float64(bytes.Load())/secs/1e6, errs.Load())
	default:
		log.Fatalf("unknown mode %q", *mode)
	}
}

func tlsRequest(target string, cfg *tls.Config, end time.Time) error {
	c, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(end.Add(5 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: kubernetes\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	br := bufio.NewReader(tc)
	line, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if len(line) < 12 || line[9:12] != "200" {
		return fmt.Errorf("status line %q", line)
	}
	_, err = io.Copy(io.Discard, br)
	return err
}

// bulk streams /bulk until end and returns the bytes received.
func bulk(target string, end time.Time) (int64, error) {
	c, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(end)
	if _, err := io.WriteString(c, "GET /bulk HTTP/1.1\r\nHost: kubernetes\r\n\r\n"); err != nil {
		return 0, err
	}
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return n, nil
			}
			return n, err
		}
	}
}
