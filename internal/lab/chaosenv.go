package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// NewChaosEnv is what lab chaos gives the driver for the lab st: the
// stack's settled and holder judgments (the agents' own view of the VIP
// in haplane's: a killed agent's stale address does not count, as clients
// follow the new master's announcement), etcd's leader from the client
// host, progress to out.
func NewChaosEnv(st *State, out io.Writer) ChaosEnv {
	stack := StackOf(st)
	return ChaosEnv{
		State:      st,
		Settled:    func() bool { return stack.Settled(st) },
		EtcdLeader: st.EtcdLeader,
		Holder:     func() string { return stack.Holder(st) },
		Out:        out,
	}
}

// Failure is the first scenario that ran and failed, nil when none did.
func (r *Report) Failure() error {
	for _, s := range r.Scenarios {
		if s.Skipped == "" && !s.Pass {
			return fmt.Errorf("lab: chaos: %s: %s", s.Name, s.Verdict)
		}
	}
	return nil
}

// WriteReportFiles writes chaos.json and chaos.html into dir.
func WriteReportFiles(dir string, rep *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "chaos.json"), data, 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "chaos.html"))
	if err != nil {
		return err
	}
	if err := WriteHTML(f, rep); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
