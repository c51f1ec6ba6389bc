// Command chaoscmp prints, side by side, the chaos reports (chaos.json of
// `haplane lab chaos --report`) of the same lab run with haplane's agent and
// with the classic keepalived + haproxy recipe, as a Markdown table with the
// classic/haplane ratio of the client's longest gap. With one report it
// prints that report's terminal table, as `lab chaos` does.
//
//	go run ./bench/lib/chaoscmp HAPLANE.json CLASSIC.json
//	go run ./bench/lib/chaoscmp REPORT.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/haplane/haplane/internal/lab"
)

func load(path string) (*lab.Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r lab.Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func cell(s lab.ScenarioResult) string {
	if s.Skipped != "" {
		return "skipped"
	}
	o := s.Observed
	verdict := "pass"
	if !s.Pass {
		verdict = "**fail**"
	}
	out := fmt.Sprintf("%s gap, %d/%d failed, %d slow, %d/%d writes lost", ms(o.MaxGap), o.Failed, o.Requests, o.Slow, o.Lost, o.Writes)
	for _, name := range lab.LeaderLeases {
		if d, ok := s.LeaseTakeover[name]; ok {
			out += fmt.Sprintf(", new leader in %.1f s", d.Seconds())
		}
	}
	return out + " (" + verdict + ")"
}

func main() {
	if len(os.Args) == 2 {
		r, err := load(os.Args[1])
		if err == nil {
			err = lab.WriteTable(os.Stdout, r)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaoscmp:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: chaoscmp HAPLANE.json CLASSIC.json, or chaoscmp REPORT.json")
		os.Exit(2)
	}
	h, err := load(os.Args[1])
	if err == nil {
		var c *lab.Report
		if c, err = load(os.Args[2]); err == nil {
			byName := map[string]lab.ScenarioResult{}
			for _, s := range c.Scenarios {
				byName[s.Name] = s
			}
			fmt.Println("| scenario | haplane | classic (keepalived + haproxy, kubeadm guide) | longest gap, classic / haplane |")
			fmt.Println("|---|---|---|---|")
			for _, s := range h.Scenarios {
				cs, ok := byName[s.Name]
				ratio := "-"
				if ok && s.Skipped == "" && cs.Skipped == "" && s.Observed.MaxGap > 0 {
					ratio = fmt.Sprintf("%.1fx", float64(cs.Observed.MaxGap)/float64(s.Observed.MaxGap))
				}
				other := "not run"
				if ok {
					other = cell(cs)
				}
				fmt.Printf("| %s | %s | %s | %s |\n", s.Name, cell(s), other, ratio)
			}
			return
		}
	}
	fmt.Fprintln(os.Stderr, "chaoscmp:", err)
	os.Exit(1)
}
