package agent

import (
	"encoding/json"
	"runtime"
	"testing"
)

// TestStatusShowsLBEngine: the agent's /status document carries the load
// balancer's engine (its event loops), which haplane status prints.
func TestStatusShowsLBEngine(t *testing.T) {
	m := startMaintAgent(t)
	resp, err := m.unixClient().Get("http://agent/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Parts struct {
			LB *struct {
				Engine *struct {
					Loops      int `json:"loops"`
					Configured int `json:"configured"`
					GOMAXPROCS int `json:"gomaxprocs"`
				} `json:"engine"`
			} `json:"lb"`
		} `json:"parts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Parts.LB == nil || doc.Parts.LB.Engine == nil {
		t.Fatal("/status has no parts.lb.engine")
	}
	e := doc.Parts.LB.Engine
	if e.Loops < 1 || e.GOMAXPROCS != runtime.GOMAXPROCS(0) {
		t.Errorf("engine %+v: want at least one loop and GOMAXPROCS %d", *e, runtime.GOMAXPROCS(0))
	}
}
