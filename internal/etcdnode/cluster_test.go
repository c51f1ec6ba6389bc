package etcdnode

import (
	"os"
	"path/filepath"
	"testing"
)

func TestKubeadmClientTLS(t *testing.T) {
	withHealthcheck := t.TempDir()
	if err := os.MkdirAll(filepath.Join(withHealthcheck, "etcd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withHealthcheck, "etcd", "healthcheck-client.crt"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	without := t.TempDir()
	for _, tc := range []struct {
		name string
		pki  string
		set  ClientTLS
		want ClientTLS
	}{
		{"health-check client", withHealthcheck, ClientTLS{}, ClientTLS{
			CertFile: filepath.Join(withHealthcheck, "etcd", "healthcheck-client.crt"),
			KeyFile:  filepath.Join(withHealthcheck, "etcd", "healthcheck-client.key"),
			CAFile:   filepath.Join(withHealthcheck, "etcd", "ca.crt")}},
		{"apiserver's etcd client", without, ClientTLS{}, ClientTLS{
			CertFile: filepath.Join(without, "apiserver-etcd-client.crt"),
			KeyFile:  filepath.Join(without, "apiserver-etcd-client.key"),
			CAFile:   filepath.Join(without, "etcd", "ca.crt")}},
		{"flags win, key beside the certificate", without, ClientTLS{CertFile: "/x/me.pem", CAFile: "/x/ca.pem"},
			ClientTLS{CertFile: "/x/me.pem", KeyFile: "/x/me.key", CAFile: "/x/ca.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := KubeadmClientTLS(tc.pki, tc.set); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
