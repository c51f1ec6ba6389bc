package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestStatusShowsLBEngine: the load balancer's engine from the agent's
// document is in the text screen and in the JSON document.
func TestStatusShowsLBEngine(t *testing.T) {
	doc := `{"agent":{"node":"cp1","cluster":"lab","version":"test"},"ready":true,"parts":{"lb":{"frontends":["10.77.0.100:6443"],` +
		`"backends":[{"addr":"10.77.0.11:6443","health":"up","active":1,"total":3}],"engine":{"loops":%d,"configured":%d,"gomaxprocs":4}}}}`
	tests := []struct {
		loops, configured int
		want              string
	}{
		{2, 0, "  engine: 2 event loops (loadBalancer.loops 0: one per CPU), GOMAXPROCS 4\n"},
		{3, 3, "  engine: 3 event loops (loadBalancer.loops 3), GOMAXPROCS 4\n"},
	}
	for _, tt := range tests {
		v := View{Agent: []byte(fmt.Sprintf(doc, tt.loops, tt.configured))}
		var out bytes.Buffer
		if err := WriteText(&out, v); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tt.want) {
			t.Errorf("text lacks %q:\n%s", tt.want, out.String())
		}
		js, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`"engine":{"loops":%d,"configured":%d,"gomaxprocs":4}`, tt.loops, tt.configured); !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s:\n%s", want, js)
		}
	}
}
