package render

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/haplane/haplane/internal/config"
)

var classicNames = []string{"keepalived.conf", "check_apiserver.sh", "haproxy.cfg"}

func classicByName(t *testing.T, files []ClassicFile) map[string]ClassicFile {
	t.Helper()
	if len(files) != len(classicNames) {
		t.Fatalf("%d files, want %d", len(files), len(classicNames))
	}
	m := map[string]ClassicFile{}
	for i, f := range files {
		if base := path.Base(f.Name); base != classicNames[i] {
			t.Fatalf("file %d is %s, want %s", i, f.Name, classicNames[i])
		}
		m[path.Base(f.Name)] = f
	}
	return m
}

// kaValue returns the value of the first "key value" line in a
// keepalived.conf.
func kaValue(conf []byte, key string) string {
	for _, line := range strings.Split(string(conf), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestClassicGolden(t *testing.T) {
	tc := kubeadmCases[0] // stacked
	c := exampleCluster(t, tc.opts)
	prios := map[string]string{}
	for i, n := range c.Nodes {
		files, err := Classic(c, n.Name, ClassicOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := classicByName(t, files)
		for _, f := range files {
			golden(t, filepath.Join("classic", n.Name, path.Base(f.Name)), f.Data)
		}
		ka, sh, hap := m["keepalived.conf"], m["check_apiserver.sh"], m["haproxy.cfg"]
		if ka.Name != "/etc/keepalived/keepalived.conf" || sh.Name != "/etc/keepalived/check_apiserver.sh" || hap.Name != "/etc/haproxy/haproxy.cfg" {
			t.Errorf("%s: default paths %s, %s, %s", n.Name, ka.Name, sh.Name, hap.Name)
		}
		if sh.Mode != 0o755 || ka.Mode&0o111 != 0 || hap.Mode&0o111 != 0 || sh.Mode&0o022 != 0 {
			t.Errorf("%s: modes %v %v %v; want only the check script executable, none writable but by its owner", n.Name, ka.Mode, sh.Mode, hap.Mode)
		}
		if !strings.HasPrefix(string(sh.Data), "#!/bin/sh\n") {
			t.Errorf("%s: check script does not start with #!/bin/sh", n.Name)
		}
		wantState := "BACKUP"
		if i == 0 {
			wantState = "MASTER"
		}
		if got := kaValue(ka.Data, "state"); got != wantState {
			t.Errorf("%s: state %q, want %s", n.Name, got, wantState)
		}
		p := kaValue(ka.Data, "priority")
		if other, dup := prios[p]; dup {
			t.Errorf("%s and %s share priority %s", other, n.Name, p)
		}
		prios[p] = n.Name
		for key, want := range map[string]string{
			"script":            `"/etc/keepalived/check_apiserver.sh"`,
			"interface":         c.InterfaceFor(n),
			"virtual_router_id": strconv.Itoa(c.VIP.VirtualRouterID),
			"auth_pass":         "42",
			"vrrp_version":      "2",
			"advert_int":        "1",
			"interval":          "3",
			"weight":            "-2",
			"fall":              "10",
			"rise":              "2",
		} {
			if got := kaValue(ka.Data, key); got != want {
				t.Errorf("%s: keepalived.conf %s %q, want %q", n.Name, key, got, want)
			}
		}
		vip := c.ControlPlaneEndpoint.VIP
		if !strings.Contains(string(ka.Data), "virtual_ipaddress {\n        "+vip+"\n    }") {
			t.Errorf("%s: keepalived.conf lacks the VIP %s", n.Name, vip)
		}
		port := strconv.Itoa(c.ControlPlaneEndpoint.Port)
		for _, want := range []string{"https://localhost:" + port + "/", "https://" + vip + ":" + port + "/", `grep -qF " ` + vip + `/"`} {
			if !strings.Contains(string(sh.Data), want) {
				t.Errorf("%s: check script lacks %s", n.Name, want)
			}
		}
		if !strings.Contains(string(hap.Data), "\n    bind *:"+port+"\n") {
			t.Errorf("%s: haproxy.cfg does not bind *:%s", n.Name, port)
		}
		for _, m := range c.Nodes {
			want := "    server " + m.Name + " " + m.Address + ":" + strconv.Itoa(c.ControlPlaneEndpoint.APIServerPort) + " check\n"
			if !strings.Contains(string(hap.Data), want) {
				t.Errorf("%s: haproxy.cfg lacks %q", n.Name, want)
			}
		}
	}
	if len(prios) != len(c.Nodes) || prios["101"] != c.Nodes[0].Name || prios["100"] != c.Nodes[1].Name {
		t.Errorf("priorities %v: want 101 for the first node, then 100, 99, ...", prios)
	}
}

func TestClassicOptions(t *testing.T) {
	c := exampleCluster(t, kubeadmCases[0].opts)
	first := c.Nodes[0].Name
	if _, err := Classic(c, "no-such-node", ClassicOptions{}); err == nil || !strings.Contains(err.Error(), "no-such-node") {
		t.Errorf("unknown node: err = %v", err)
	}
	dir := "/tmp/lab/cp1"
	files, err := Classic(c, first, ClassicOptions{Dir: dir, Curl: "/opt/my curl/bin/curl"})
	if err != nil {
		t.Fatal(err)
	}
	m := classicByName(t, files)
	for _, f := range files {
		if filepath.Dir(f.Name) != dir {
			t.Errorf("%s is not in %s", f.Name, dir)
		}
	}
	if got := kaValue(m["keepalived.conf"].Data, "script"); got != `"/tmp/lab/cp1/check_apiserver.sh"` {
		t.Errorf("script %s", got)
	}
	if !strings.Contains(string(m["check_apiserver.sh"].Data), "\n'/opt/my curl/bin/curl' --silent") {
		t.Errorf("check script does not run the quoted curl:\n%s", m["check_apiserver.sh"].Data)
	}
	for _, bad := range []string{"relative/dir", "/with space", `/quote"d`, "/bang!"} {
		if _, err := Classic(c, first, ClassicOptions{Dir: bad}); err == nil {
			t.Errorf("dir %q: no error", bad)
		}
	}

	// vip.auth.password is used, cut to VRRPv2's 8 bytes.
	c.VIP.Auth = &config.VIPAuth{Type: "pass", Password: "0123456789"}
	files, err = Classic(c, first, ClassicOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := kaValue(files[0].Data, "auth_pass"); got != "01234567" {
		t.Errorf("auth_pass %q, want 01234567", got)
	}
	c.VIP.Auth.Password = "a b"
	if _, err := Classic(c, first, ClassicOptions{}); err == nil {
		t.Error("password with a space: no error")
	}
	c.VIP.Auth = nil

	c6 := *c
	c6.ControlPlaneEndpoint.VIP = "fd00::100"
	if _, err := Classic(&c6, first, ClassicOptions{}); err == nil {
		t.Error("IPv6 VIP: no error")
	}
}

// TestClassicBinaries checks the rendered files with Debian's haproxy and
// keepalived (apt-get install -y haproxy keepalived), each skipped when its
// binary is missing.
func TestClassicBinaries(t *testing.T) {
	c := exampleCluster(t, kubeadmCases[0].opts)
	for _, n := range c.Nodes {
		dir := t.TempDir()
		files, err := Classic(c, n.Name, ClassicOptions{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(f.Name, f.Data, f.Mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(f.Name, f.Mode); err != nil { // past the umask
				t.Fatal(err)
			}
		}
		m := classicByName(t, files)
		t.Run(n.Name+"/haproxy", func(t *testing.T) {
			bin, err := exec.LookPath("haproxy")
			if err != nil {
				t.Skip("haproxy is not installed (apt-get install -y haproxy): not checking haproxy.cfg")
			}
			out, err := exec.Command(bin, "-c", "-f", m["haproxy.cfg"].Name).CombinedOutput()
			if err != nil {
				t.Fatalf("haproxy -c: %v\n%s\n---\n%s", err, out, m["haproxy.cfg"].Data)
			}
			t.Logf("haproxy -c:\n%s", out)
		})
		t.Run(n.Name+"/keepalived", func(t *testing.T) {
			bin, err := exec.LookPath("keepalived")
			if err != nil {
				t.Skip("keepalived is not installed (apt-get install -y keepalived): not checking keepalived.conf")
			}
			if os.Geteuid() != 0 {
				t.Skip("not root: keepalived's script security (enable_script_security) refuses a check script that root does not own, so keepalived.conf is only checked as root")
			}
			// --config-test parses the file, checks the interface and the
			// track script (present, executable, writable by root only)
			// and exits non-zero on any error or warning, which it prints.
			// It exits 0 for a missing file, hence the Stat.
			conf := m["keepalived.conf"].Name
			if _, err := os.Stat(conf); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "--config-test", "-f", conf).CombinedOutput()
			if err != nil || len(out) != 0 {
				t.Fatalf("keepalived --config-test: %v\n%s\n---\n%s", err, out, m["keepalived.conf"].Data)
			}
			// The same file without its check script must fail: the
			// test does look at the script.
			if err := os.Remove(m["check_apiserver.sh"].Name); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, "--config-test", "-f", conf).CombinedOutput(); err == nil {
				t.Fatalf("keepalived --config-test passes without the check script:\n%s", out)
			}
		})
	}
}
