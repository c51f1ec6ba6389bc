package pki

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

func freePort(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestEtcdClusterWithGeneratedCertificates is a real consumer of the
// generated set: three etcd members in-process on 127.0.0.1-3 with their
// server and peer certificates and client-certificate auth on both ports;
// the healthcheck-client and apiserver-etcd-client certificates can write
// and read, a certificate from a foreign CA is refused. It runs with the
// defaults (rsa2048, stacked members on the control-plane hosts) and with
// ecdsa-p256 on external etcd hosts, so both key algorithms and both
// topologies' member folders meet a real etcd.
func TestEtcdClusterWithGeneratedCertificates(t *testing.T) {
	for _, tc := range []struct {
		alg      string
		external bool
	}{
		{RSA2048, false},
		{ECDSAP256, true},
	} {
		name := tc.alg + "/stacked"
		if tc.external {
			name = tc.alg + "/external"
		}
		t.Run(name, func(t *testing.T) { testEtcdCluster(t, tc.alg, tc.external) })
	}
}

func testEtcdCluster(t *testing.T, alg string, external bool) {
	p := labPlan(alg)
	if external {
		p = externalPlan(alg)
	}
	var members []*Host
	for i := range p.Hosts {
		if (p.Hosts[i].Role == RoleEtcd) == external {
			members = append(members, &p.Hosts[i])
		}
	}
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	for _, ip := range ips[1:] {
		if ln, err := net.Listen("tcp", ip+":0"); err != nil {
			t.Skipf("loopback address %s is not usable here: %v", ip, err)
		} else {
			ln.Close()
		}
	}
	for i, h := range members {
		h.Address = netip.MustParseAddr(ips[i])
	}
	dir := t.TempDir()
	files, _, err := Generate(p, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteTree(dir, files); err != nil {
		t.Fatal(err)
	}
	clientPorts, peerPorts := make([]int, 3), make([]int, 3)
	var initial []string
	for i, h := range members {
		clientPorts[i], peerPorts[i] = freePort(t, ips[i]), freePort(t, ips[i])
		initial = append(initial, fmt.Sprintf("%s=https://%s:%d", h.Name, ips[i], peerPorts[i]))
	}
	var endpoints []string
	started := make(chan *embed.Etcd, 3)
	errs := make(chan error, 3)
	for i, h := range members {
		pkiDir := filepath.Join(dir, h.Name, "pki")
		cfg := embed.NewConfig()
		cfg.Name = h.Name
		cfg.Dir = t.TempDir()
		cfg.LogLevel = "error"
		cu := url.URL{Scheme: "https", Host: fmt.Sprintf("%s:%d", ips[i], clientPorts[i])}
		pu := url.URL{Scheme: "https", Host: fmt.Sprintf("%s:%d", ips[i], peerPorts[i])}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "lab-etcd"
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: filepath.Join(pkiDir, "etcd/server.crt"), KeyFile: filepath.Join(pkiDir, "etcd/server.key"),
			TrustedCAFile: filepath.Join(pkiDir, "etcd/ca.crt"), ClientCertAuth: true,
		}
		cfg.PeerTLSInfo = transport.TLSInfo{
			CertFile: filepath.Join(pkiDir, "etcd/peer.crt"), KeyFile: filepath.Join(pkiDir, "etcd/peer.key"),
			TrustedCAFile: filepath.Join(pkiDir, "etcd/ca.crt"), ClientCertAuth: true,
		}
		endpoints = append(endpoints, cu.String())
		go func() {
			e, err := embed.StartEtcd(cfg)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", cfg.Name, err)
				return
			}
			started <- e
		}()
	}
	for range 3 {
		select {
		case e := <-started:
			t.Cleanup(e.Close)
			select {
			case <-e.Server.ReadyNotify():
			case <-time.After(60 * time.Second):
				t.Fatal("etcd member not ready in 60s")
			}
		case err := <-errs:
			t.Fatal(err)
		}
	}

	client := func(certDir, name string) *clientv3.Client {
		tc, err := transport.TLSInfo{
			CertFile: filepath.Join(certDir, name+".crt"), KeyFile: filepath.Join(certDir, name+".key"),
			TrustedCAFile: filepath.Join(dir, "cp1/pki/etcd/ca.crt"),
		}.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tc, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	health := client(filepath.Join(dir, members[1].Name, "pki/etcd"), "healthcheck-client")
	api := client(filepath.Join(dir, "cp3/pki"), "apiserver-etcd-client")
	if _, err := api.Put(ctx, "/registry/test", "written by the apiserver client"); err != nil {
		t.Fatalf("put with apiserver-etcd-client: %v", err)
	}
	resp, err := health.Get(ctx, "/registry/test")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "written by the apiserver client" {
		t.Fatalf("get with healthcheck-client: %v %v", resp, err)
	}
	if st, err := health.Status(ctx, endpoints[0]); err != nil || st.Leader == 0 {
		t.Fatalf("status: %v %v", st, err)
	}

	// A client certificate from another cluster's etcd CA is refused. Only
	// a CA and one client are made for it: a whole foreign tree would
	// cost some 37 RSA keys.
	foreignKey, err := NewKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	foreignCA, err := NewCA(CASpec{Name: EtcdCA, CN: "etcd-ca"}, foreignKey, time.Now(), DefaultCAValidity)
	if err != nil {
		t.Fatal(err)
	}
	clientKey, err := NewKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	leaves, _ := p.Leaves("cp1")
	var spec LeafSpec
	for _, l := range leaves {
		if l.Name == "apiserver-etcd-client" {
			spec = l
		}
	}
	clientCert, err := Sign(spec, clientKey.Public(), KeyPair{Cert: foreignCA, Key: foreignKey}, time.Now(), DefaultValidity)
	if err != nil {
		t.Fatal(err)
	}
	clientKeyPEM, err := KeyPEM(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	fdir := t.TempDir()
	if _, err := WriteTree(fdir, map[string]File{
		"client.crt": {Data: CertPEM(clientCert), Mode: 0o644},
		"client.key": {Data: clientKeyPEM, Mode: 0o600},
	}); err != nil {
		t.Fatal(err)
	}
	ftc, err := transport.TLSInfo{
		CertFile: filepath.Join(fdir, "client.crt"), KeyFile: filepath.Join(fdir, "client.key"),
		TrustedCAFile: filepath.Join(dir, "cp1/pki/etcd/ca.crt"),
	}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(endpoints[0], "https://"), ftc)
	if err == nil {
		// TLS 1.3 reports a rejected client certificate on the first read.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("foreign client certificate: err = %v, want a certificate error", err)
	}
}
