package lab

import (
	"context"
	"encoding/json"
	"errors"
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

// UpgradeBinaries finds the Kubernetes binaries the rolling-upgrade
// scenario moves the lab to, built and cached (progress to out); none
// without a version, and a FlagError on a lab without real Kubernetes.
func (s *State) UpgradeBinaries(ctx context.Context, version string, out io.Writer) (string, error) {
	if version == "" {
		return "", nil
	}
	if s.Backend != BackendKube {
		return "", FlagError{errors.New("--upgrade-to needs a lab with real Kubernetes (lab up --backend kube)")}
	}
	return K8sBinaries(ctx, version, out)
}

// RunChaosReport is RunChaos, with chaos.json and chaos.html written into
// reportDir (when set) of whatever report it made, even on an error.
func RunChaosReport(ctx context.Context, env ChaosEnv, o ChaosOptions, reportDir string) (*Report, error) {
	rep, err := RunChaos(ctx, env, o)
	if rep != nil && reportDir != "" {
		if werr := WriteReportFiles(reportDir, rep); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	return rep, err
}
