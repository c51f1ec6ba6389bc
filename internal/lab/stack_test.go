package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haplane/haplane/internal/config"
)

// adminConf is the smallest kubeconfig the client host's worker plan
// rewrites to point at its node-local load balancer.
const adminConf = `apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://10.77.0.100:6443
contexts:
- name: admin@lab
  context: {cluster: lab, user: admin}
current-context: admin@lab
users:
- name: admin
  user: {token: t}
`

// TestStackProcessPlans pins each stack's process plan: for every kind of
// host, in each topology and backend a lab can run, the processes in
// start order with their programs and arguments (testdata/plans, rewritten
// with -update). A change to what a lab host runs shows here as a diff.
func TestStackProcessPlans(t *testing.T) {
	cases := []struct {
		stack, backend, topology string
		separateEtcd             bool
	}{
		{VIPLBHaplane, BackendStub, config.TopologyStacked, false},
		{VIPLBHaplane, BackendStub, config.TopologyExternal, false},
		{VIPLBHaplane, BackendKube, config.TopologyStacked, true},
		{VIPLBHaplane, BackendKube, config.TopologyExternal, true},
		{VIPLBClassic, BackendStub, config.TopologyStacked, true},
		{VIPLBClassic, BackendKube, config.TopologyStacked, true},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s-%s-%s", tc.stack, tc.backend, tc.topology)
		if tc.separateEtcd {
			name += "-separate-etcd"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Nodes: 3, Topology: tc.topology}
			st := &State{Prefix: "hpl", Dir: dir, ClusterFile: filepath.Join(dir, "haplane.yaml"), Binary: filepath.Join(dir, "haplane"),
				Backend: tc.backend, K8sBin: "/k8s", VIPLB: tc.stack, SeparateEtcd: tc.separateEtcd}
			if err := os.WriteFile(st.ClusterFile, ClusterFile(o), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(st.ClusterFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(st.HostDir("cp1"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(st.HostDir("cp1"), "admin.conf"), []byte(adminConf), 0o600); err != nil {
				t.Fatal(err)
			}
			hosts := []HostState{{Name: "cp1", Role: "control-plane"}, {Name: "cp2", Role: "control-plane"}, {Name: "client", Role: "client"}}
			for _, e := range c.Etcd.Nodes {
				hosts = append(hosts, HostState{Name: e.Name, Role: "etcd"})
			}
			stack, ok := StackNamed(tc.stack)
			if !ok {
				t.Fatalf("no stack %s", tc.stack)
			}
			var b strings.Builder
			for _, h := range hosts {
				procs, err := stack.Procs(st, c, h)
				if err != nil {
					t.Fatalf("%s: %v", h.Name, err)
				}
				fmt.Fprintf(&b, "%s (%s):\n", h.Name, h.Role)
				if len(procs) == 0 {
					b.WriteString("  (nothing)\n")
				}
				for _, p := range procs {
					exe := p.Exec
					if exe == "" {
						exe = "haplane"
					}
					line := fmt.Sprintf("  %s: %s %s", p.Name, exe, strings.Join(p.Args, " "))
					if p.Hostname != "" {
						line += " [hostname " + p.Hostname + "]"
					}
					b.WriteString(strings.ReplaceAll(line, dir, "$LAB") + "\n")
				}
			}
			got := b.String()
			// The plan's processes read files the plan wrote: the classic
			// stack's configurations, the worker's kubeconfig.
			if tc.stack == VIPLBClassic {
				for _, f := range []string{"keepalived.conf", "haproxy.cfg"} {
					if _, err := os.Stat(filepath.Join(st.HostDir("cp1"), "classic", f)); err != nil {
						t.Errorf("classic plan did not write %s: %v", f, err)
					}
				}
			}
			golden := filepath.Join("testdata", "plans", name+".txt")
			if *updateReport {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestStackProcessPlans -update)", err)
			}
			if got != string(want) {
				t.Errorf("process plan differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}
