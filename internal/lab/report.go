// Rendering of a `lab chaos` Report.
//
// WriteHTML renders one self-contained page (inline CSS and SVG, no script,
// nothing fetched): a header with the run's endpoint, nodes, topology and
// start time; a summary table with one row per scenario; then one section
// per scenario with its description, verdict and a timeline of probe
// outcomes, VIP holders, leader Lease holders and the driver's events.
//
// WriteTable renders the same summary table as plain text for a terminal.
//
// Both are deterministic (map keys are sorted, coordinates rounded) so they
// can be golden-tested.

package lab

import (
	"cmp"
	"fmt"
	"html/template"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// WriteHTML writes r as a self-contained HTML page. Every string from the
// report is escaped by html/template.
func WriteHTML(w io.Writer, r *Report) error {
	colors, legend := hostColors(r)
	p := htmlPage{
		Endpoint: r.Endpoint,
		Nodes:    r.Nodes,
		Topology: r.Topology,
		Started:  "-",
		Legend:   legend,
	}
	if !r.Started.IsZero() {
		p.Started = r.Started.Format("2006-01-02 15:04:05 MST")
	}
	for i := range r.Scenarios {
		sc := &r.Scenarios[i]
		row := summaryOf(i, sc)
		p.Rows = append(p.Rows, row)
		s := section{ScenarioResult: sc, Row: row, Ran: fmtDur(sc.Duration)}
		if sc.Skipped == "" {
			s.Timeline = buildTimeline(row.Anchor, sc, colors)
			s.Errors, s.MoreErrors = probeErrors(sc.Observed.Samples)
			if sc.MaxGapW > 0 {
				s.GapBound = fmtMS(sc.MaxGapW)
			}
		}
		p.Sections = append(p.Sections, s)
	}
	return pageTemplate.Execute(w, p)
}

// WriteTable writes the summary of r as an aligned plain-text table.
func WriteTable(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tSTACK\tTARGET\tREQUESTS\tFAILED\tSLOW\tLONGEST GAP\tLEASE TAKEOVER\tWRITES\tRESULT")
	for i := range r.Scenarios {
		row := summaryOf(i, &r.Scenarios[i])
		result := row.Result
		if row.Reason != "" {
			result += ": " + row.Reason
		}
		cells := []string{row.Name, row.Stack, row.Target, row.Requests, row.Failed,
			row.Slow, row.Gap, row.TakeoverText(), row.Writes, result}
		// A tab or newline inside a cell (a multi-line error in a skip
		// reason) would break the columns: collapse all whitespace.
		for j, c := range cells {
			cells[j] = strings.Join(strings.Fields(c), " ")
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// summaryRow is one scenario's line of the summary, already formatted, so
// the HTML and the text table cannot disagree.
type summaryRow struct {
	Anchor, Name, Stack, Target         string
	Requests, Failed, Slow, Gap, Writes string
	Takeovers                           []string // "scheduler 14.2s", one per Lease
	GapBad, WritesBad                   bool
	Result                              string // PASS, FAIL or SKIPPED
	Reason                              string // why it was skipped
}

func summaryOf(i int, sc *ScenarioResult) summaryRow {
	row := summaryRow{
		Anchor: "s" + strconv.Itoa(i),
		Name:   sc.Name,
		Stack:  orDash(sc.Stack),
		Target: orDash(sc.Target),
	}
	if sc.Skipped != "" {
		row.Requests, row.Failed, row.Slow, row.Gap, row.Writes = "-", "-", "-", "-", "-"
		row.Result, row.Reason = "SKIPPED", sc.Skipped
		return row
	}
	o := &sc.Observed
	row.Requests = strconv.Itoa(o.Requests)
	row.Failed = strconv.Itoa(o.Failed)
	row.Slow = strconv.Itoa(o.Slow)
	row.Gap = fmtMS(o.MaxGap)
	row.GapBad = sc.MaxGapW > 0 && o.MaxGap > sc.MaxGapW
	row.Takeovers = takeovers(sc.LeaseTakeover)
	row.Writes = writesText(o)
	row.WritesBad = o.Lost > 0
	row.Result = "FAIL"
	if sc.Pass {
		row.Result = "PASS"
	}
	return row
}

// takeovers lists each Lease's takeover time, "none" for a Lease that did
// not change hands.
func takeovers(m map[string]time.Duration) []string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(m)) {
		d := "none"
		if m[name] > 0 {
			d = fmtDur(m[name])
		}
		parts = append(parts, shortLease(name)+" "+d)
	}
	return parts
}

// TakeoverText is the lease takeover column: "scheduler 14.2s,
// controller-manager 15.1s", or "-".
func (row summaryRow) TakeoverText() string {
	if len(row.Takeovers) == 0 {
		return "-"
	}
	return strings.Join(row.Takeovers, ", ")
}

func writesText(o *Observation) string {
	if o.Writes == 0 && o.Lost == 0 && o.WriteErrors == 0 {
		return "-"
	}
	s := fmt.Sprintf("%d acked, %d lost", o.Writes, o.Lost)
	if o.WriteErrors > 0 {
		s += fmt.Sprintf(", %d refused", o.WriteErrors)
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortLease drops the "kube-" of the control plane's leader Leases:
// "kube-scheduler" is "scheduler".
func shortLease(name string) string { return strings.TrimPrefix(name, "kube-") }

// noHolder is the holder value when no agent holds the VIP, or nobody the
// Lease; an empty value (a released Lease) is shown the same way.
const noHolder = "nobody"

func vipLabel(v string) string { return cmp.Or(v, noHolder) }

// leaseLabel shortens a Lease holder identity to its host: the reader
// wants "cp1", not "cp1_3f2a…".
func leaseLabel(v string) string { return HolderHost(cmp.Or(v, noHolder)) }

func fmtMS(d time.Duration) string {
	return strconv.FormatInt(d.Round(time.Millisecond).Milliseconds(), 10) + "ms"
}

// fmtDur prints ms under a second (failovers are often sub-second) and
// tenths of seconds above.
func fmtDur(d time.Duration) string {
	if d < time.Second {
		return fmtMS(d)
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
}

// Colors. Host colors avoid green, orange and red, which mean probe OK,
// slow and failed (and red also a dual VIP holder).
var hostPalette = []string{"#4e79a7", "#8e6bb8", "#2a9d8f", "#9c755f", "#d16ba5", "#5b6fd6", "#b8860b", "#607d8b"}

const (
	colorOK     = "#4caf50"
	colorSlow   = "#ff9800"
	colorFailed = "#d62728"
	colorNobody = "#c8c8c8"
	colorStripe = "#7f1416" // the dark stripes of a dual holder
	textLight   = "#fff"
	textDark    = "#222"
)

type swatch struct{ Label, Color string }

// hostColors gives every host named anywhere in r (VIP holders, either side
// of a dual holder, Lease holders) one color for the whole page, so cp2 is
// the same color in every lane of every scenario.
func hostColors(r *Report) (map[string]string, []swatch) {
	seen := map[string]bool{}
	for _, sc := range r.Scenarios {
		for _, m := range sc.VIPHolder {
			for _, h := range strings.Split(vipLabel(m.Value), "+") {
				seen[h] = true
			}
		}
		for _, marks := range sc.Observed.Leases {
			for _, m := range marks {
				seen[leaseLabel(m.Value)] = true
			}
		}
	}
	delete(seen, noHolder)
	colors := map[string]string{}
	var legend []swatch
	for i, h := range slices.Sorted(maps.Keys(seen)) {
		colors[h] = hostPalette[i%len(hostPalette)]
		legend = append(legend, swatch{h, colors[h]})
	}
	return colors, legend
}

// Timeline geometry, in SVG user units (= CSS px: the SVG is drawn at its
// natural width so text keeps its size).
const (
	svgWidth   = 1200.0
	plotLeft   = 180.0 // room for the lane labels
	plotRight  = svgWidth - 24
	laneHeight = 20.0
	laneGap    = 8.0
	eventRow   = 16.0 // height of one row of event labels
	// charWidth is a generous average advance of 12px sans-serif text, to
	// decide whether a label fits without measuring it.
	charWidth = 7.2
)

// timeline is a scenario's SVG with every coordinate computed, so the
// template only prints.
type timeline struct {
	ID                    string // unique in the page, for the stripe pattern
	Width, Height         float64
	LabelX, Left, Right   float64 // lane labels' right edge, plot edges
	GridTop               float64 // where the lanes start
	AxisY, TickY, TickTxt float64
	Lanes                 []lane
	Ticks                 []tick
	Events                []eventMark
}

type lane struct {
	Label       string
	Y, H, TextY float64
	Segs        []seg
}

type seg struct {
	X, W, TextX    float64
	Fill, Title    string
	Text, TextFill string // Text is empty when it would not fit
}

type tick struct {
	X     float64
	Label string
}

type eventMark struct {
	X, Y1, Y2, TextX, TextY float64
	Anchor, Text, Title     string
}

func buildTimeline(id string, sc *ScenarioResult, colors map[string]string) *timeline {
	end := timelineEnd(sc)
	x := func(d time.Duration) float64 {
		return plotLeft + (plotRight-plotLeft)*float64(d)/float64(end)
	}
	t := &timeline{ID: id, Width: svgWidth, LabelX: plotLeft - 10, Left: plotLeft, Right: plotRight}

	events, rows := placeEvents(sc.Events, x)
	y := 6 + float64(rows)*eventRow + 4
	t.GridTop = y
	addLane := func(label string, segs []seg) {
		// 4 below the middle centers 12-13px text vertically.
		t.Lanes = append(t.Lanes, lane{Label: label, Y: y, H: laneHeight, TextY: y + laneHeight/2 + 4, Segs: segs})
		y += laneHeight + laneGap
	}
	addLane("probes", probeSegs(sc.Observed.Samples, x))
	addLane("VIP holder", holderSegs(id, sc.VIPHolder, end, vipLabel, colors, x))
	for _, name := range slices.Sorted(maps.Keys(sc.Observed.Leases)) {
		addLane(shortLease(name)+" lease", holderSegs(id, sc.Observed.Leases[name], end, leaseLabel, colors, x))
	}
	lanesBottom := y - laneGap
	for i := range events {
		events[i].Y2 = lanesBottom
	}
	t.Events = events
	t.AxisY = lanesBottom + 4
	t.TickY, t.TickTxt = t.AxisY+4, t.AxisY+16
	t.Height = t.AxisY + 22
	step := tickStep(end)
	for d := time.Duration(0); d <= end; d += step {
		t.Ticks = append(t.Ticks, tick{X: x(d), Label: strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"})
	}
	return t
}

// timelineEnd is the right edge of the x axis: the scenario's duration, or
// later if anything was recorded after it.
func timelineEnd(sc *ScenarioResult) time.Duration {
	end := sc.Duration
	for _, s := range sc.Observed.Samples {
		end = max(end, s.At+s.Latency)
	}
	for _, m := range sc.VIPHolder {
		end = max(end, m.At)
	}
	for _, marks := range sc.Observed.Leases {
		for _, m := range marks {
			end = max(end, m.At)
		}
	}
	for _, e := range sc.Events {
		end = max(end, e.At)
	}
	if end <= 0 {
		return time.Second
	}
	return end
}

// tickStep is the smallest round step that keeps the axis to at most 15
// labels.
func tickStep(end time.Duration) time.Duration {
	steps := []time.Duration{
		100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute,
	}
	for _, s := range steps {
		if end/s <= 15 {
			return s
		}
	}
	return time.Hour
}

// placeEvents puts every event's label in the first row where it does not
// overlap a previous label, so close events stack instead of overprinting.
// A label that would run off the right edge is drawn left of its line.
func placeEvents(evs []Event, x func(time.Duration) float64) ([]eventMark, int) {
	// The driver's goroutines record events concurrently: sort so the
	// greedy placement sees them left to right.
	evs = slices.Clone(evs)
	slices.SortStableFunc(evs, func(a, b Event) int { return cmp.Compare(a.At, b.At) })
	var rowEnds []float64
	var marks []eventMark
	for _, e := range evs {
		ex := x(e.At)
		w := float64(utf8.RuneCountInString(e.What)) * charWidth
		m := eventMark{X: ex, Text: e.What, Title: fmt.Sprintf("%.2fs %s", e.At.Seconds(), e.What),
			Anchor: "start", TextX: ex + 4}
		left, right := ex+4, ex+4+w
		if right > svgWidth-4 {
			m.Anchor, m.TextX = "end", ex-4
			left, right = ex-4-w, ex-4
		}
		row := slices.IndexFunc(rowEnds, func(end float64) bool { return end+8 <= left })
		if row < 0 {
			row = len(rowEnds)
			rowEnds = append(rowEnds, 0)
		}
		rowEnds[row] = right
		m.Y1 = 6 + float64(row)*eventRow
		m.TextY = m.Y1 + eventRow - 4
		marks = append(marks, m)
	}
	return marks, len(rowEnds)
}

// probeClass orders outcomes by how much they matter: failures are drawn
// last so a lone failed probe is never hidden under OK ones sharing its
// pixel.
type probeClass int

const (
	probeOK probeClass = iota
	probeSlow
	probeFailed
)

func classify(s Sample) probeClass {
	switch {
	case !s.OK:
		return probeFailed
	case s.Latency > time.Second:
		return probeSlow
	}
	return probeOK
}

// probeSegs draws the probes, in time order as the client made them one
// after the other. Consecutive probes with the same outcome become one rect
// (from the first's start to the next outcome's start): it looks the same
// as one mark per probe and keeps a minutes-long run at 100 probes a second
// to a few KB.
func probeSegs(ss []Sample, x func(time.Duration) float64) []seg {
	var byClass [probeFailed + 1][]seg
	for i := 0; i < len(ss); {
		c := classify(ss[i])
		j := i + 1
		for j < len(ss) && classify(ss[j]) == c {
			j++
		}
		start, end := ss[i].At, ss[j-1].At+ss[j-1].Latency
		if j < len(ss) {
			end = ss[j].At
		}
		span := fmt.Sprintf("%.2fs–%.2fs: %d ", start.Seconds(), end.Seconds(), j-i)
		s := seg{X: x(start), W: max(x(end)-x(start), 1)}
		switch c {
		case probeOK:
			s.Fill, s.Title = colorOK, span+"ok"
		case probeSlow:
			s.Fill, s.Title = colorSlow, span+"slow (over 1s)"
		case probeFailed:
			s.Fill, s.Title = colorFailed, span+"failed: "+orDash(ss[i].Err)
		}
		byClass[c] = append(byClass[c], s)
		i = j
	}
	return slices.Concat(byClass[:]...)
}

// holderSegs draws who held something over time: each mark (recorded in
// time order by one poller) holds until the next one, the last until end;
// labeled when the label fits.
func holderSegs(id string, marks []Mark, end time.Duration, label func(string) string,
	colors map[string]string, x func(time.Duration) float64) []seg {
	var segs []seg
	for i, m := range marks {
		until := end
		if i+1 < len(marks) {
			until = marks[i+1].At
		}
		w := x(until) - x(m.At)
		if w <= 0 { // a mark at the very end
			continue
		}
		l := label(m.Value)
		s := seg{X: x(m.At), W: w, Fill: colors[l], TextFill: textLight,
			Title: fmt.Sprintf("%s from %.2fs to %.2fs", cmp.Or(m.Value, noHolder), m.At.Seconds(), until.Seconds())}
		switch {
		case l == noHolder:
			s.Fill, s.TextFill = colorNobody, textDark
		case strings.Contains(l, "+"):
			s.Fill = "url(#" + id + "-dual)"
		}
		if w >= float64(utf8.RuneCountInString(l))*charWidth+6 {
			s.Text, s.TextX = l, s.X+w/2
		}
		segs = append(segs, s)
	}
	return segs
}

type errCount struct {
	Err string
	N   int
}

// maxErrors bounds the list under a timeline: errors that embed a source
// port are all distinct, and the most frequent ones tell the story.
const maxErrors = 5

// probeErrors counts the failed probes' distinct errors, most frequent
// first, and how many distinct errors were left out.
func probeErrors(samples []Sample) ([]errCount, int) {
	counts := map[string]int{}
	for _, s := range samples {
		if !s.OK {
			counts[orDash(s.Err)]++
		}
	}
	var list []errCount
	for _, e := range slices.Sorted(maps.Keys(counts)) {
		list = append(list, errCount{e, counts[e]})
	}
	slices.SortStableFunc(list, func(a, b errCount) int { return cmp.Compare(b.N, a.N) })
	if len(list) > maxErrors {
		return list[:maxErrors], len(list) - maxErrors
	}
	return list, 0
}

type htmlPage struct {
	Endpoint, Topology, Started string
	Nodes                       int
	Legend                      []swatch
	Rows                        []summaryRow
	Sections                    []section
}

type section struct {
	*ScenarioResult
	Row        summaryRow
	Ran        string // the duration, formatted
	GapBound   string
	Timeline   *timeline
	Errors     []errCount
	MoreErrors int
}

// px prints a coordinate with at most one decimal: enough precision, and
// stable output.
func px(v float64) string { return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) }

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{"px": px}).Parse(pageHTML))

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>haplane lab chaos report</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;max-width:1220px;margin:20px auto;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 4px;padding-top:14px;border-top:1px solid #ddd}
p{margin:4px 0}
.meta{color:#555}
table{border-collapse:collapse;width:100%;font-size:13px;margin:12px 0}
th,td{padding:4px 8px;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal}
.nw{white-space:nowrap}
td.result{white-space:normal;min-width:200px}
th.num{text-align:right}
td a{color:inherit}
.badge{display:inline-block;padding:0 7px;border-radius:3px;font-size:12px;font-weight:600;color:#fff;vertical-align:middle}
.PASS{background:#2e7d32}.FAIL{background:#c62828}.SKIPPED{background:#888}
.bad{color:#c62828;font-weight:600}
.reason{color:#666}
.legend{color:#555;font-size:13px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin:0 4px 0 12px}
.sw.ok{background:` + colorOK + `}.sw.slow{background:` + colorSlow + `}.sw.failed{background:` + colorFailed + `}.sw.nobody{background:` + colorNobody + `}
.sw.dual{background:repeating-linear-gradient(45deg,` + colorFailed + ` 0 5px,` + colorStripe + ` 5px 8px)}
svg{display:block;max-width:100%;height:auto;margin:10px 0}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
code{font-size:12px;background:#f4f4f4;padding:1px 4px;border-radius:2px}
ul{margin:4px 0 0;padding-left:22px}
</style>
</head>
<body>
<h1>haplane lab chaos report</h1>
<p class="meta">endpoint <b>{{.Endpoint}}</b> · {{.Nodes}} nodes · topology {{.Topology}} · started {{.Started}}</p>
<p class="legend">probes:<span class="sw ok"></span>ok<span class="sw slow"></span>slow (over 1s)<span class="sw failed"></span>failed
· holders:<span class="sw nobody"></span>nobody<span class="sw dual"></span>two at once{{range .Legend}}<span class="sw" style="background:{{.Color}}"></span>{{.Label}}{{end}}</p>
<table>
<tr><th>Scenario</th><th>Stack</th><th>Target</th><th class="num">Requests</th><th class="num">Failed</th><th class="num">Slow</th><th class="num">Longest gap</th><th>Lease takeover</th><th>Writes</th><th>Result</th></tr>
{{range .Rows}}<tr><td><a href="#{{.Anchor}}">{{.Name}}</a></td><td>{{.Stack}}</td><td>{{.Target}}</td><td class="num">{{.Requests}}</td><td class="num">{{.Failed}}</td><td class="num">{{.Slow}}</td><td class="num{{if .GapBad}} bad{{end}}">{{.Gap}}</td><td class="wrap">{{range $i, $t := .Takeovers}}{{if $i}}, {{end}}<span class="nw">{{$t}}</span>{{else}}-{{end}}</td><td{{if .WritesBad}} class="bad"{{end}}>{{.Writes}}</td><td class="result"><span class="badge {{.Result}}">{{.Result}}</span>{{with .Reason}} <span class="reason">{{.}}</span>{{end}}</td></tr>
{{end}}</table>
{{range .Sections}}
<section>
<h2 id="{{.Row.Anchor}}">{{.Name}} <span class="badge {{.Row.Result}}">{{.Row.Result}}</span></h2>
<p class="meta">stack {{.Row.Stack}} · backend {{or .Backend "-"}} · target {{.Row.Target}}{{if not .Skipped}} · ran {{.Ran}}{{end}}</p>
<p>{{.Description}}</p>
{{- if .Skipped}}
<p class="reason">Skipped: {{.Skipped}}</p>
{{- else}}
<p><b>Verdict:</b> {{.Verdict}}</p>
<p class="meta">{{.Row.Requests}} requests · {{.Row.Failed}} failed · {{.Row.Slow}} slow · longest gap <span{{if .Row.GapBad}} class="bad"{{end}}>{{.Row.Gap}}</span>{{with .GapBound}} (bound {{.}}){{end}} · writes <span{{if .Row.WritesBad}} class="bad"{{end}}>{{.Row.Writes}}</span> · lease takeover {{.Row.TakeoverText}}</p>
{{template "timeline" .Timeline}}
{{- with .Errors}}
<p>Probe errors:</p>
<ul>{{range .}}<li><code>{{.Err}}</code> × {{.N}}</li>{{end}}</ul>
{{- end}}
{{- if .MoreErrors}}
<p class="reason">and {{.MoreErrors}} other distinct errors</p>
{{- end}}
{{- end}}
</section>
{{- end}}
</body>
</html>
{{define "timeline"}}
<svg xmlns="http://www.w3.org/2000/svg" width="{{px .Width}}" height="{{px .Height}}" viewBox="0 0 {{px .Width}} {{px .Height}}" font-size="12">
<defs><pattern id="{{.ID}}-dual" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="8" height="8" fill="` + colorFailed + `"/><rect width="3" height="8" fill="` + colorStripe + `"/></pattern></defs>
{{- range .Ticks}}
<line x1="{{px .X}}" y1="{{px $.GridTop}}" x2="{{px .X}}" y2="{{px $.AxisY}}" stroke="#ececec"/>
{{- end}}
{{- range $l := .Lanes}}
<text x="{{px $.LabelX}}" y="{{px $l.TextY}}" text-anchor="end" font-size="13" fill="#333">{{$l.Label}}</text>
{{- range .Segs}}
<rect x="{{px .X}}" y="{{px $l.Y}}" width="{{px .W}}" height="{{px $l.H}}" fill="{{.Fill}}"><title>{{.Title}}</title></rect>
{{- if .Text}}<text x="{{px .TextX}}" y="{{px $l.TextY}}" text-anchor="middle" fill="{{.TextFill}}">{{.Text}}</text>{{end}}
{{- end}}
{{- end}}
<line x1="{{px .Left}}" y1="{{px .AxisY}}" x2="{{px .Right}}" y2="{{px .AxisY}}" stroke="#888"/>
{{- range .Ticks}}
<line x1="{{px .X}}" y1="{{px $.AxisY}}" x2="{{px .X}}" y2="{{px $.TickY}}" stroke="#888"/><text x="{{px .X}}" y="{{px $.TickTxt}}" text-anchor="middle" fill="#555">{{.Label}}</text>
{{- end}}
{{- range .Events}}
<line x1="{{px .X}}" y1="{{px .Y1}}" x2="{{px .X}}" y2="{{px .Y2}}" stroke="#333" stroke-width="1.2" stroke-dasharray="4 3"><title>{{.Title}}</title></line>
<text x="{{px .TextX}}" y="{{px .TextY}}" text-anchor="{{.Anchor}}" fill="#222" stroke="#fff" stroke-width="3" paint-order="stroke">{{.Text}}<title>{{.Title}}</title></text>
{{- end}}
</svg>
{{- end}}`
