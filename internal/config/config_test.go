package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleValidates(t *testing.T) {
	for _, o := range []ExampleOptions{
		{},
		{Name: "prod", VIP: "192.0.2.10", Interface: "bond0", Nodes: []Node{{Name: "a", Address: "192.0.2.1"}, {Name: "b", Address: "192.0.2.2"}}},
		{EtcdNodes: []EtcdNode{{Name: "e1", Address: "10.77.0.21"}, {Name: "e2", Address: "10.77.0.22"}, {Name: "e3", Address: "10.77.0.23"}}},
	} {
		c, err := Parse("haplane.yaml", Example(o))
		if err != nil {
			t.Fatalf("example %+v does not validate:\n%v\n---\n%s", o, err, Example(o))
		}
		if len(c.Nodes) == 0 || c.Nodes[0].Priority != DefaultBasePriority {
			t.Errorf("first node priority = %d, want %d", c.Nodes[0].Priority, DefaultBasePriority)
		}
		if len(o.EtcdNodes) > 0 && c.Etcd.Topology != TopologyExternal {
			t.Errorf("topology = %q, want external", c.Etcd.Topology)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("haplane.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"port", c.ControlPlaneEndpoint.Port, 8443},
		{"apiServerPort", c.ControlPlaneEndpoint.APIServerPort, 6443},
		{"vrrp version", c.VIP.Version, 3},
		{"advert", c.VIP.AdvertInterval.Duration, 100 * time.Millisecond},
		{"preempt", c.VIP.PreemptEnabled(), true},
		{"priorities", []int{c.Nodes[0].Priority, c.Nodes[1].Priority, c.Nodes[2].Priority}, []int{250, 249, 248}},
		{"topology", c.Etcd.Topology, "stacked"},
		{"service subnet", c.Networking.ServiceSubnet, "10.96.0.0/12"},
		{"dns domain", c.Networking.DNSDomain, "cluster.local"},
		{"validity", c.Certificates.Validity.Duration, 8760 * time.Hour},
		{"ca validity", c.Certificates.CAValidity.Duration, 87600 * time.Hour},
		{"key", c.Certificates.KeyAlgorithm, "rsa2048"},
		{"health path", c.LoadBalancer.HealthCheck.Path, "/readyz"},
		{"lb loops (0: one per CPU)", c.LoadBalancer.Loops, 0},
		{"backends", len(c.APIServerAddrs()), 3},
		{"frontend", c.FrontendAddr().String(), "10.77.0.100:8443"},
		{"etcd members", len(c.EtcdMembers()), 3},
	}
	for _, ck := range checks {
		if strings.TrimSpace(sprint(ck.got)) != strings.TrimSpace(sprint(ck.want)) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	// Version 2 defaults to keepalived's 1 s interval.
	c2, err := Parse("haplane.yaml", []byte(strings.Replace(minimal, "virtualRouterID: 51", "virtualRouterID: 51\n  version: 2", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c2.VIP.AdvertInterval.Duration != time.Second {
		t.Errorf("v2 advert = %s, want 1s", c2.VIP.AdvertInterval.Duration)
	}
}

func sprint(v any) string { return strings.ReplaceAll(strings.TrimSpace(fmtAny(v)), "  ", " ") }

const minimal = `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: lab
controlPlaneEndpoint:
  vip: 10.77.0.100
vip:
  interface: eth0
  virtualRouterID: 51
nodes:
  - name: cp1
    address: 10.77.0.11
  - name: cp2
    address: 10.77.0.12
  - name: cp3
    address: 10.77.0.13
`

// TestBrokenFiles lists broken cluster files with every message expected,
// in order, exactly as an operator sees them.
func TestBrokenFiles(t *testing.T) {
	cases := []struct {
		name string
		file string
		want []string
	}{
		{"empty", "", []string{"haplane.yaml: file is empty"}},
		{"syntax", "name: [a\n", []string{"haplane.yaml:1: invalid YAML: did not find expected ',' or ']'"}},
		{"tabs", "name: a\n\tkind: x\n", []string{"haplane.yaml:2: invalid YAML: found a tab character that violates indentation"}},
		{"not a mapping", "- a\n- b\n", []string{"haplane.yaml:1: expected a mapping, got a list"}},
		{"two documents", minimal + "---\nname: b\n", []string{"haplane.yaml:16: a second YAML document is not allowed; one cluster per file"}},
		{"unknown fields and typo", strings.Replace(minimal, "  interface: eth0", "  interfce: eth0\n  colour: blue", 1), []string{
			"haplane.yaml:7: vip.interfce: unknown field (did you mean \"interface\"?)",
			"haplane.yaml:8: vip.colour: unknown field",
			"haplane.yaml:11: nodes[0].interface: no interface: set vip.interface, or interface on every node",
			"haplane.yaml:13: nodes[1].interface: no interface: set vip.interface, or interface on every node",
			"haplane.yaml:15: nodes[2].interface: no interface: set vip.interface, or interface on every node",
		}},
		{"wrong case", strings.Replace(minimal, "virtualRouterID", "virtualRouterId", 1), []string{
			"haplane.yaml:6: vip.virtualRouterID: 0 is out of range 1..255 (and must be unique on the link)",
			"haplane.yaml:8: vip.virtualRouterId: unknown field (did you mean \"virtualRouterID\"?)",
		}},
		{"duplicate key", strings.Replace(minimal, "name: lab", "name: lab\nname: other", 1), []string{
			"haplane.yaml:4: name: duplicate field (first set on line 3)",
		}},
		{"bad types", strings.Replace(strings.Replace(minimal, "virtualRouterID: 51", "virtualRouterID: fifty", 1), "name: lab", "name: 42", 1), []string{
			"haplane.yaml:3: name: expected a string, got a number (quote it to make it a string)",
			"haplane.yaml:8: vip.virtualRouterID: expected a whole number, got \"fifty\"",
		}},
		{"bad addresses, VRID, priorities", `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: lab
controlPlaneEndpoint:
  vip: 10.77.0.300
vip:
  interface: eth0
  virtualRouterID: 256
nodes:
  - name: cp1
    address: 10.77.0.11
    priority: 100
  - name: cp1
    address: 10.77.0.11
    priority: 100
  - name: cp3
    address: not-an-ip
    priority: 99
`, []string{
			"haplane.yaml:5: controlPlaneEndpoint.vip: \"10.77.0.300\" is not an IP address",
			"haplane.yaml:8: vip.virtualRouterID: 256 is out of range 1..255 (and must be unique on the link)",
			"haplane.yaml:13: nodes[1].name: \"cp1\" is already used by nodes[0]",
			"haplane.yaml:14: nodes[1].address: 10.77.0.11 is already used by nodes[0]",
			"haplane.yaml:15: nodes[1].priority: 100 is also nodes[0]'s priority; equal priorities cause dual masters after a partition, give each node its own",
			"haplane.yaml:17: nodes[2].address: \"not-an-ip\" is not an IP address",
		}},
		{"VIP equals a node", strings.Replace(minimal, "address: 10.77.0.12", "address: 10.77.0.100", 1), []string{
			"haplane.yaml:13: nodes[1].address: 10.77.0.100 is the VIP; a node needs its own address",
		}},
		{"durations and CIDRs", minimal + `loadBalancer:
  connectTimeout: 5 seconds
networking:
  serviceSubnet: 10.96.0.1/12
  podSubnet: 10.96.0.0/8
certificates:
  validity: -1h
`, []string{
			"haplane.yaml:17: loadBalancer.connectTimeout: invalid duration \"5 seconds\": want a number with a unit, e.g. 100ms, 3s, 8760h or 365d",
			"haplane.yaml:19: networking.serviceSubnet: \"10.96.0.1/12\" has host bits set; did you mean 10.96.0.0/12?",
			"haplane.yaml:20: networking.podSubnet: \"10.96.0.0/8\" has host bits set; did you mean 10.0.0.0/8?",
			"haplane.yaml:22: certificates.validity: must be greater than zero, got -1h0m0s",
		}},
		{"loops negative", minimal + "loadBalancer:\n  loops: -1\n", []string{
			"haplane.yaml:17: loadBalancer.loops: -1 is out of range 0..256 (0: one per CPU)",
		}},
		{"loops too many", minimal + "loadBalancer:\n  loops: 257\n", []string{
			"haplane.yaml:17: loadBalancer.loops: 257 is out of range 0..256 (0: one per CPU)",
		}},
		{"renewal checks too rare", minimal + `certificates:
  renewBefore: 2h
  renewCheckInterval: 90m
`, []string{
			"haplane.yaml:18: certificates.renewCheckInterval: 1h30m0s is more than half of renewBefore (2h0m0s): a leaf could expire between two checks",
		}},
		{"VRRP v2 rules", strings.Replace(minimal, "virtualRouterID: 51", "virtualRouterID: 51\n  version: 2\n  advertInterval: 100ms\n  auth:\n    type: ah\n    password: muchtoolongpassword", 1), []string{
			"haplane.yaml:10: vip.advertInterval: 100ms: VRRP version 2 needs whole seconds from 1s to 255s",
			"haplane.yaml:12: vip.auth.type: \"ah\" is not supported; use \"pass\" (keepalived's auth_type PASS)",
			"haplane.yaml:13: vip.auth.password: must be 1 to 8 bytes (VRRPv2 carries 8), got 19",
		}},
		{"v3 with auth and odd interval", strings.Replace(minimal, "virtualRouterID: 51", "virtualRouterID: 51\n  advertInterval: 15ms\n  auth: {type: pass, password: x}", 1), []string{
			"haplane.yaml:9: vip.advertInterval: 15ms: VRRP version 3 needs a multiple of 10ms from 10ms to 40.95s",
			"haplane.yaml:10: vip.auth: authentication exists only in VRRP version 2 (RFC 5798 removed it); remove it or set version: 2",
		}},
		{"missing everything", "apiVersion: v1\nkind: Pod\n", []string{
			"haplane.yaml:1: apiVersion: \"v1\" is not supported; this haplane reads \"haplane.dev/v1alpha1\"",
			"haplane.yaml:1: name: required",
			"haplane.yaml:1: controlPlaneEndpoint.vip: required",
			"haplane.yaml:1: vip.virtualRouterID: 0 is out of range 1..255 (and must be unique on the link)",
			"haplane.yaml:1: nodes: at least one control-plane node is required (three for high availability)",
			"haplane.yaml:2: kind: \"Pod\" is not supported; want \"Cluster\"",
		}},
		{"some priorities set", strings.Replace(minimal, "    address: 10.77.0.11", "    address: 10.77.0.11\n    priority: 200", 1), []string{
			"haplane.yaml:13: nodes[1].priority: set a priority on every node or on none (haplane then assigns 250, 249, ...)",
			"haplane.yaml:15: nodes[2].priority: set a priority on every node or on none (haplane then assigns 250, 249, ...)",
		}},
		{"external etcd", minimal + "etcd:\n  topology: external\n  nodes:\n    - name: e1\n      address: 10.77.0.100\n", []string{
			"haplane.yaml:20: etcd.nodes[0].address: 10.77.0.100 is the VIP; an etcd host needs its own address",
		}},
		{"external etcd shares control-plane names and addresses", minimal + `etcd:
  topology: external
  nodes:
    - name: cp1
      address: 10.77.0.12
    - name: e2
      address: 10.77.0.22
    - name: e2
      address: 10.77.0.22
    - name: cp3
      address: 10.77.0.23
`, []string{
			"haplane.yaml:19: etcd.nodes[0].name: \"cp1\" is already used by nodes[0]",
			"haplane.yaml:20: etcd.nodes[0].address: 10.77.0.12 is already used by nodes[1]",
			"haplane.yaml:23: etcd.nodes[2].name: \"e2\" is already used by etcd.nodes[1]",
			"haplane.yaml:24: etcd.nodes[2].address: 10.77.0.22 is already used by etcd.nodes[1]",
			"haplane.yaml:25: etcd.nodes[3].name: \"cp3\" is already used by nodes[2]",
		}},
		{"stacked with etcd nodes", minimal + "etcd:\n  nodes:\n    - name: e1\n      address: 10.77.0.21\n", []string{
			"haplane.yaml:17: etcd.nodes: only used with topology: external; stacked members run on the control-plane nodes",
		}},
		{"etcd run by someone else", minimal + "etcd:\n  runBy: systemd\n", []string{
			"haplane.yaml:17: etcd.runBy: \"systemd\" is not one of agent, kubelet",
		}},
		{"external etcd run by kubelet", minimal + "etcd:\n  topology: external\n  runBy: kubelet\n  nodes:\n    - name: e1\n      address: 10.77.0.21\n", []string{
			"haplane.yaml:18: etcd.runBy: kubelet runs stacked members (kubeadm's etcd static pods); external etcd hosts run the haplane agent",
		}},
		{"same ports", strings.Replace(minimal, "  vip: 10.77.0.100", "  vip: 10.77.0.100\n  port: 6443", 1), []string{
			"haplane.yaml:6: controlPlaneEndpoint.port: must differ from apiServerPort (6443): the load balancer and kube-apiserver run on the same hosts",
		}},
		{"merge keys", minimal + "loadBalancer:\n  <<: {algorithm: leastconn}\n", []string{
			"haplane.yaml:17: loadBalancer: YAML merge keys (<<) are not supported; write the fields out",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantErrors(t, tc.file, tc.want) })
	}
}

// wantErrors parses file and checks it fails with exactly want, in order.
func wantErrors(t *testing.T, file string, want []string) {
	t.Helper()
	_, err := Parse("haplane.yaml", []byte(file))
	var ve *Errors
	if !errors.As(err, &ve) {
		t.Fatalf("Parse error = %v, want *Errors", err)
	}
	var got []string
	for _, fe := range ve.List {
		got = append(got, fe.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "haplane.yaml")
	if err := os.WriteFile(p, Example(ExampleOptions{}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file error = %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, maxFileSize+10), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file error = %v", err)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"100ms": 100 * time.Millisecond, "365d": 365 * 24 * time.Hour, "1h30m": 90 * time.Minute, "0": 0} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"d", "1.5d", "x", "99999999d", "-d"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
}

// FuzzParse checks that no input makes the loader panic, and that whatever
// it accepts is valid and survives defaulting again.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add(Example(ExampleOptions{}))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("nodes: [{name: a, address: 1.2.3.4}]"))
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, data) })
}

// checkParse is the fuzz targets' property: an error is a non-empty
// *Errors, and an accepted file re-validates after defaulting again. It
// returns the accepted cluster, or nil.
func checkParse(t *testing.T, data []byte) *Cluster {
	t.Helper()
	c, err := Parse("f.yaml", data)
	if err != nil {
		var ve *Errors
		if !errors.As(err, &ve) || len(ve.List) == 0 {
			t.Fatalf("error %v is not a non-empty *Errors", err)
		}
		return nil
	}
	c.SetDefaults()
	if ve := c.Validate(); ve != nil {
		t.Fatalf("accepted file does not re-validate: %v", ve)
	}
	return c
}

// TestAddressLifetime: vip.addressLifetime is whole seconds from 1s to 1h;
// absent or zero means the default.
func TestAddressLifetime(t *testing.T) {
	const msg = "haplane.yaml:9: vip.addressLifetime: %s: needs whole seconds from 1s to 1h0m0s (the kernel counts address lifetimes in seconds)"
	cases := []struct {
		value   string // "" leaves the field out
		want    time.Duration
		wantErr string
	}{
		{"", time.Second, ""},
		{"0s", time.Second, ""},
		{"1s", time.Second, ""},
		{"3s", 3 * time.Second, ""},
		{"1h", time.Hour, ""},
		{"500ms", 0, "500ms"},
		{"1500ms", 0, "1.5s"},
		{"-1s", 0, "-1s"},
		{"2h", 0, "2h0m0s"},
	}
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			file := minimal
			if tc.value != "" {
				file = strings.Replace(minimal, "virtualRouterID: 51", "virtualRouterID: 51\n  addressLifetime: "+tc.value, 1)
			}
			c, err := Parse("haplane.yaml", []byte(file))
			if tc.wantErr != "" {
				var ve *Errors
				if !errors.As(err, &ve) || len(ve.List) != 1 {
					t.Fatalf("Parse error = %v, want one error", err)
				}
				if got, want := ve.List[0].Error(), fmt.Sprintf(msg, tc.wantErr); got != want {
					t.Errorf("error\n got: %s\nwant: %s", got, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.VIP.AddressLifetime.Duration; got != tc.want {
				t.Errorf("addressLifetime = %v, want %v", got, tc.want)
			}
		})
	}
}
