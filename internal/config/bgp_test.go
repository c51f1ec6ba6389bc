package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimalBGP = `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: lab
controlPlaneEndpoint:
  vip: 10.77.0.100
vip:
  mode: bgp
  bgp:
    localASN: 64512
    peers:
      - address: 10.77.9.1
        asn: 64513
nodes:
  - name: cp1
    address: 10.77.0.11
  - name: cp2
    address: 10.77.0.12
`

// TestBGPDefaults: mode bgp needs neither vip.interface nor a VRID, and the
// timers and peer port take their short defaults.
func TestBGPDefaults(t *testing.T) {
	c, err := Parse("haplane.yaml", []byte(minimalBGP))
	if err != nil {
		t.Fatal(err)
	}
	b := c.VIP.BGP
	if !c.VIP.BGPMode() || b.HoldTime.Duration != 3*time.Second || b.KeepaliveInterval.Duration != time.Second || b.Peers[0].Port != 179 {
		t.Errorf("defaults: mode %q hold %s keepalive %s port %d", c.VIP.Mode, b.HoldTime, b.KeepaliveInterval, b.Peers[0].Port)
	}
	if got := c.RouterIDFor(c.Nodes[1]); got != "10.77.0.12" {
		t.Errorf("router ID = %s, want the node's address", got)
	}
	vrrp, err := Parse("haplane.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if vrrp.VIP.Mode != VIPModeVRRP {
		t.Errorf("default mode = %q", vrrp.VIP.Mode)
	}
}

// TestBGPBrokenFiles: every BGP problem in one run, each with its line.
func TestBGPBrokenFiles(t *testing.T) {
	cases := []struct {
		name string
		file string
		want []string
	}{
		{"bgp block without mode", strings.Replace(minimal, "vip:\n", "vip:\n  bgp: {localASN: 1, peers: [{address: 10.77.9.1, asn: 2}]}\n", 1), []string{
			"haplane.yaml:7: vip.bgp: only used with mode: bgp",
		}},
		{"mode without block", strings.Replace(minimal, "vip:\n", "vip:\n  mode: bgp\n", 1), []string{
			"haplane.yaml:6: vip.bgp: required with mode: bgp (localASN and peers)",
		}},
		{"unknown mode", strings.Replace(minimal, "vip:\n", "vip:\n  mode: ospf\n", 1), []string{
			"haplane.yaml:7: vip.mode: \"ospf\" is not one of vrrp, bgp",
		}},
		{"everything wrong", `apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: lab
controlPlaneEndpoint:
  vip: 10.77.0.100
vip:
  mode: bgp
  bgp:
    localASN: 4294967296
    routerID: "::1"
    holdTime: 2s
    keepaliveInterval: 1500ms
    communities: ["64512:100", "65536:1", "no-export"]
    peers:
      - address: 10.77.0.11
        asn: 0
        port: 70000
      - address: 10.77.9.1
        asn: 65001
        password: ` + strings.Repeat("x", 81) + `
      - address: 10.77.9.1
        asn: 65001
        colour: red
nodes:
  - name: cp1
    address: 10.77.0.11
`, []string{
			"haplane.yaml:9: vip.bgp.localASN: number 4294967296 is out of range 0..4294967295",
			"haplane.yaml:10: vip.bgp.routerID: \"::1\" is not a non-zero IPv4 address (the BGP identifier is 32 bits)",
			"haplane.yaml:11: vip.bgp.holdTime: 2s: needs whole seconds from 3s to 65535s (RFC 4271)",
			"haplane.yaml:12: vip.bgp.keepaliveInterval: 1.5s: needs whole seconds, at least 1s",
			"haplane.yaml:13: vip.bgp.communities[1]: \"65536:1\" is not a community ASN:value with both 0..65535",
			"haplane.yaml:13: vip.bgp.communities[2]: \"no-export\" is not a community ASN:value with both 0..65535",
			"haplane.yaml:15: vip.bgp.peers[0].address: 10.77.0.11 is nodes[0]'s address; peers are the routers",
			"haplane.yaml:16: vip.bgp.peers[0].asn: required: an AS number 1..4294967295",
			"haplane.yaml:17: vip.bgp.peers[0].port: port 70000 is out of range 1..65535",
			"haplane.yaml:20: vip.bgp.peers[1].password: is 81 bytes; TCP MD5 keys are at most 80",
			"haplane.yaml:21: vip.bgp.peers[2].address: 10.77.9.1 is also vip.bgp.peers[1]",
			"haplane.yaml:23: vip.bgp.peers[2].colour: unknown field",
		}},
		{"no peers, keepalive above hold", strings.Replace(minimalBGP, "    peers:\n      - address: 10.77.9.1\n        asn: 64513\n", "    peers: []\n    keepaliveInterval: 5s\n", 1), []string{
			"haplane.yaml:10: vip.bgp.peers: at least one BGP peer is required",
			"haplane.yaml:11: vip.bgp.keepaliveInterval: 5s must be below the hold time (3s), or the peer drops the session",
		}},
		{"IPv6 node without router ID", strings.NewReplacer("10.77.0.100", "fd77::100", "10.77.9.1", "fd77:9::1", "10.77.0.1", "fd77::1").Replace(minimalBGP) + "networking: {serviceSubnet: fd96::/112}\n", []string{
			"haplane.yaml:15: nodes[0].address: fd77::11 is IPv6: the BGP identifier defaults to the node's address and must be IPv4; set vip.bgp.routerID",
			"haplane.yaml:17: nodes[1].address: fd77::12 is IPv6: the BGP identifier defaults to the node's address and must be IPv4; set vip.bgp.routerID",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantErrors(t, tc.file, tc.want) })
	}
}

// TestParseCommunity: RFC 1997 "ASN:value", both halves 16 bits.
func TestParseCommunity(t *testing.T) {
	for in, want := range map[string]uint32{"0:0": 0, "64512:100": 64512<<16 | 100, "65535:65535": 0xffffffff} {
		if got, err := ParseCommunity(in); err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", ":", "1:", ":1", "1:2:3", "-1:2", "a:b"} {
		if _, err := ParseCommunity(in); err == nil {
			t.Errorf("ParseCommunity(%q) succeeded", in)
		}
	}
}

// FuzzParseBGP is FuzzParse seeded with BGP files (testdata/fuzz/FuzzParseBGP
// holds more): whatever the loader accepts re-validates after defaulting.
func FuzzParseBGP(f *testing.F) {
	f.Add([]byte(minimalBGP))
	seeds, _ := filepath.Glob("testdata/bgp/*.yaml")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := checkParse(t, data)
		if c != nil && c.VIP.BGPMode() {
			for _, cm := range c.VIP.BGP.Communities {
				if _, err := ParseCommunity(cm); err != nil {
					t.Fatalf("accepted community %q: %v", cm, err)
				}
			}
		}
	})
}

// TestExampleBGP: the example written with BGP options validates in mode bgp.
func TestExampleBGP(t *testing.T) {
	c, err := Parse("haplane.yaml", Example(ExampleOptions{BGP: &BGP{LocalASN: 64512, Peers: []BGPPeer{{Address: "10.77.0.1", ASN: 64513, BFD: true}}}}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.VIP.BGPMode() || len(c.VIP.BGP.Peers) != 1 || !c.VIP.BGP.Peers[0].BFD {
		t.Errorf("vip = %+v", c.VIP)
	}
}

// TestSummarize: validate's summary shows the BGP settings in mode bgp
// (never a password) and the VRRP ones otherwise.
func TestSummarize(t *testing.T) {
	bgp := strings.Replace(minimalBGP, "        asn: 64513\n", "        asn: 64513\n        bfd: true\n        password: secret\n      - {address: 10.77.9.2, asn: 64514, port: 1179}\n    communities: [\"64512:100\"]\n", 1)
	for _, tc := range []struct {
		name, file string
		want       string
	}{
		{"bgp", bgp, `cluster "lab", endpoint 10.77.0.100:8443, 2 control-plane node(s), stacked etcd, BGP as 64512 to 10.77.9.1 (as 64513, BFD, MD5) and 10.77.9.2 (as 64514, port 1179), hold 3s, keepalive 1s, communities 64512:100`},
		{"vrrp", minimal, `cluster "lab", endpoint 10.77.0.100:8443, 3 control-plane node(s), stacked etcd, VRRP v3 vrid 51 every 100ms on eth0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("haplane.yaml", []byte(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			s := c.Summarize()
			if got := s.String(); got != tc.want {
				t.Errorf("summary\n got %s\nwant %s", got, tc.want)
			}
			if strings.Contains(fmt.Sprintf("%+v", s.BGP), "secret") {
				t.Errorf("the summary shows a password: %+v", s.BGP)
			}
			if tc.name == "bgp" && (s.VIPMode != VIPModeBGP || s.VRRP != "" || len(s.BGP.Peers) != 2 || !s.BGP.Peers[0].BFD || !s.BGP.Peers[0].MD5 || s.BGP.Peers[1].Port != 1179) {
				t.Errorf("bgp summary: %+v %+v", s, s.BGP)
			}
		})
	}
}
