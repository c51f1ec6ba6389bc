package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// The pod's service account, as kubelet mounts it.
const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// watch lists, then watches, the ConfigMaps of namespace ns that carry the
// label key, through server (the node-local load balancer), verifying the
// apiservers' certificate for serverName. Each event is printed on a line
// of its own as it arrives:
//
//	<unix nanoseconds> <ADDED|MODIFIED|DELETED> <name>
//
// and each time the stream ends and is opened again (from the last
// resourceVersion, so no event is skipped):
//
//	<unix nanoseconds> RETRY <reason>
//
// The HTTP/2 health check is client-go's (a ping after 30s without a
// frame, 15s to answer), so the pod is as patient as a real controller:
// only the load balancer can make its watch recover fast.
func watch(server, serverName, ns, label string) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		fatal(errors.New("no CA certificate in " + saDir + "/ca.crt"))
	}
	tr := &http.Transport{
		TLSClientConfig:       &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12},
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   2 * time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
		ForceAttemptHTTP2:     true,
		HTTP2:                 &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	w := &watcher{client: &http.Client{Transport: tr}, base: strings.TrimSuffix(server, "/") + "/api/v1/namespaces/" + url.PathEscape(ns) + "/configmaps", label: label}
	for ctx.Err() == nil {
		if w.rv == "" {
			if err := w.list(ctx); err != nil {
				w.retry(ctx, "list: "+err.Error())
				continue
			}
		}
		err := w.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		w.retry(ctx, "watch: "+err.Error())
	}
}

type watcher struct {
	client *http.Client
	base   string
	label  string
	rv     string // the last resourceVersion seen; "" lists again
}

type object struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	// Code is set on a watch's ERROR object (a Status).
	Code int `json:"code"`
}

func (w *watcher) get(ctx context.Context, q url.Values) (*http.Response, error) {
	tok, err := os.ReadFile(saDir + "/token") // kubelet rotates it: read each time
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.base+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Accept", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

// list takes the collection's resourceVersion to watch from; objects that
// exist already are printed as ADDED, as an informer's list would.
func (w *watcher) list(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := w.get(lctx, url.Values{"labelSelector": {w.label}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var l struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []object `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	for _, it := range l.Items {
		fmt.Printf("%d ADDED %s\n", now, it.Metadata.Name)
	}
	w.rv = l.Metadata.ResourceVersion
	return nil
}

// follow streams events until the stream ends; it keeps the last
// resourceVersion, and forgets it when the apiserver says it is too old.
func (w *watcher) follow(ctx context.Context) error {
	resp, err := w.get(ctx, url.Values{"labelSelector": {w.label}, "watch": {"1"}, "resourceVersion": {w.rv},
		"allowWatchBookmarks": {"true"}, "timeoutSeconds": {"600"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type   string `json:"type"`
			Object object `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("stream ended")
			}
			return err
		}
		now := time.Now().UnixNano()
		switch ev.Type {
		case "BOOKMARK":
		case "ERROR":
			if ev.Object.Code == http.StatusGone {
				w.rv = ""
			}
			return fmt.Errorf("error event, code %d", ev.Object.Code)
		default:
			fmt.Printf("%d %s %s\n", now, ev.Type, ev.Object.Metadata.Name)
		}
		if ev.Object.Metadata.ResourceVersion != "" {
			w.rv = ev.Object.Metadata.ResourceVersion
		}
	}
}

func (w *watcher) retry(ctx context.Context, why string) {
	fmt.Printf("%d RETRY %s\n", time.Now().UnixNano(), strings.ReplaceAll(why, "\n", " "))
	select {
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "labpod watch:", err)
	os.Exit(1)
}
