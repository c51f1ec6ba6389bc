package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
)

// MaintenanceRefusedError is an agent's refusal of a maintenance request
// (HTTP 403: the caller may not ask it).
type MaintenanceRefusedError struct{ Action, Why string }

func (e MaintenanceRefusedError) Error() string {
	return fmt.Sprintf("maintenance %s refused: %s", e.Action, e.Why)
}

// RequestMaintenance posts action ("start" or "stop", with opts for start)
// to an agent's maintenance endpoint url and returns its result. A refusal
// by the agent's rules is in the result's Refused; a refusal of the caller
// is a MaintenanceRefusedError.
func RequestMaintenance(ctx context.Context, client *http.Client, url, action string, opts *MaintenanceOptions) (MaintenanceResult, error) {
	var res MaintenanceResult
	var body []byte
	if opts != nil {
		body, _ = json.Marshal(opts)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return res, fmt.Errorf("maintenance %s: %w", action, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusForbidden {
		return res, MaintenanceRefusedError{Action: action, Why: strings.TrimSpace(string(data))}
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return res, fmt.Errorf("maintenance %s: %s: %s", action, resp.Status, strings.TrimSpace(string(data)))
	}
	return res, nil
}

// AdminTLS reads the client certificate and CA of a kubeconfig's current
// context.
func AdminTLS(path string) (*tls.Config, error) {
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cc, err := clientcmd.NewDefaultClientConfig(*kc, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	t := cc.TLSClientConfig
	certPEM, keyPEM, caPEM := t.CertData, t.KeyData, t.CAData
	if len(certPEM) == 0 && t.CertFile != "" {
		if certPEM, err = os.ReadFile(t.CertFile); err != nil {
			return nil, err
		}
		if keyPEM, err = os.ReadFile(t.KeyFile); err != nil {
			return nil, err
		}
	}
	if len(caPEM) == 0 && t.CAFile != "" {
		if caPEM, err = os.ReadFile(t.CAFile); err != nil {
			return nil, err
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: client certificate: %w", path, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("kubeconfig %s holds no cluster CA", path)
	}
	return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil
}
