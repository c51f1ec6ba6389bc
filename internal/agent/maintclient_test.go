package agent

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// TestRequestMaintenance: the client of `haplane maintenance` against a
// real agent: over TCP the caller is refused (a MaintenanceRefusedError),
// over the unix socket start and stop run their steps.
func TestRequestMaintenance(t *testing.T) {
	m := startMaintAgent(t)
	ctx := context.Background()
	_, err := RequestMaintenance(ctx, &http.Client{Timeout: 5 * time.Second}, "http://"+m.tcp+"/maintenance/start", "start", &MaintenanceOptions{})
	if !errors.As(err, new(MaintenanceRefusedError)) {
		t.Fatalf("over TCP: %v, want a MaintenanceRefusedError", err)
	}
	res, err := RequestMaintenance(ctx, m.unixClient(), "http://agent/maintenance/start", "start", &MaintenanceOptions{DrainTimeout: Duration(time.Second), KeepVIP: true})
	if err != nil || !res.OK || res.Action != "start" || len(res.Steps) == 0 {
		t.Fatalf("start: %+v, %v", res, err)
	}
	res, err = RequestMaintenance(ctx, m.unixClient(), "http://agent/maintenance/stop", "stop", nil)
	if err != nil || !res.OK || res.Action != "stop" {
		t.Fatalf("stop: %+v, %v", res, err)
	}
}
