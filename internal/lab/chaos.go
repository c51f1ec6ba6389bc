package lab

import "time"

// Sample is one probe of the client: a new TLS connection to the VIP
// opened At (since the scenario started), with its outcome.
type Sample struct {
	At      time.Duration `json:"atNs"`
	OK      bool          `json:"ok"`
	Latency time.Duration `json:"latencyNs"`
	Err     string        `json:"err,omitempty"`
}

// Mark is a value that held from At on (since the scenario started): the
// VIP holder, a Lease's holder.
type Mark struct {
	At    time.Duration `json:"atNs"`
	Value string        `json:"value"`
}

// Event is a step the chaos driver took (the fault, the heal), for the
// timeline.
type Event struct {
	At   time.Duration `json:"atNs"`
	What string        `json:"what"`
}

// Observation is what the client host saw during a scenario: every probe,
// the writes acknowledged and lost, and the holders of the leader Leases.
type Observation struct {
	Samples []Sample `json:"samples"`
	// Requests, Failed, Slow (over 1s) and MaxGap (the longest time
	// without a successful probe) summarize Samples.
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	Slow     int           `json:"slow"`
	MaxGap   time.Duration `json:"maxGapNs"`
	// Writes is how many objects were created through the VIP and
	// acknowledged; Lost is how many of those could not be read back once
	// the cluster recovered (must be 0); WriteErrors are refused writes
	// (not acknowledged, so not lost).
	Writes      int `json:"writes"`
	WriteErrors int `json:"writeErrors"`
	Lost        int `json:"lost"`
	// Leases holds, per leader Lease (kube-scheduler,
	// kube-controller-manager), its holder over time.
	Leases map[string][]Mark `json:"leases,omitempty"`
	// Also holds the probes of further paths, made the same way and at
	// the same pace as the main one (e.g. /livez?exclude=etcd while etcd
	// has lost quorum and /readyz must fail).
	Also []PathObservation `json:"also,omitempty"`
	// Acked is each acknowledged write: when its answer came (since T0)
	// and its object's name, so a watcher's log can say how late it saw
	// each one (PodWatch).
	Acked []Mark `json:"acked,omitempty"`
}

// PathObservation is a further probe's samples and their summary.
type PathObservation struct {
	Path string `json:"path"`
	// Endpoint is set when the probes went elsewhere than the VIP: the
	// client host's node-local load balancer.
	Endpoint string        `json:"endpoint,omitempty"`
	Samples  []Sample      `json:"samples"`
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	Slow     int           `json:"slow"`
	MaxGap   time.Duration `json:"maxGapNs"`
}

// ScenarioResult is one chaos scenario's outcome.
type ScenarioResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Stack is what served the VIP and the load balancing: "haplane" or
	// "classic" (keepalived + haproxy as in kubeadm's guide).
	Stack   string `json:"stack"`
	Backend string `json:"backend"` // kube or stub
	Target  string `json:"target"`  // the host the fault hit
	// Skipped says why the scenario did not run in this lab (e.g. leader
	// Leases with the stub backend).
	Skipped  string        `json:"skipped,omitempty"`
	Duration time.Duration `json:"durationNs"`
	Events   []Event       `json:"events"`
	// VIPHolder is the holder over time ("nobody", or "cp1+cp2" while two
	// claim it), polled from every agent.
	VIPHolder []Mark      `json:"vipHolder"`
	Observed  Observation `json:"observed"`
	// LeaseTakeover is, per leader Lease whose holder the fault removed,
	// the time from the fault until another holder held it (0: did not
	// change hands during the scenario).
	LeaseTakeover map[string]time.Duration `json:"leaseTakeoverNs,omitempty"`
	// PodWatch is what the kubelet lab's in-cluster watcher (a pod on the
	// worker, through its node-local load balancer) saw of the writes.
	PodWatch *PodWatch `json:"podWatch,omitempty"`
	// Pass is the verdict: no acknowledged write lost, and the scenario's
	// own bound on the client's longest gap held.
	Pass    bool          `json:"pass"`
	MaxGapW time.Duration `json:"maxGapBoundNs"`
	Verdict string        `json:"verdict"`
}

// Report is a whole `lab chaos` run.
type Report struct {
	Started   time.Time        `json:"started"`
	Endpoint  string           `json:"endpoint"`
	Nodes     int              `json:"nodes"`
	Topology  string           `json:"topology"`
	Scenarios []ScenarioResult `json:"scenarios"`
}
