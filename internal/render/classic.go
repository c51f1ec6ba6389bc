package render

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/haplane/haplane/internal/config"
)

// ClassicOptions are host-side paths for the classic stack's files.
type ClassicOptions struct {
	// Dir is where this host's keepalived.conf, check_apiserver.sh and
	// haproxy.cfg live; keepalived.conf runs the check script from here.
	// When empty, the keepalived files go to /etc/keepalived and
	// haproxy.cfg to /etc/haproxy, as in the guide. It must be absolute
	// and free of whitespace, quotes and keepalived's comment characters
	// (! and #), so that keepalived reads the script path as one word.
	Dir string
	// Curl is the curl binary the check script runs (default "curl",
	// found on the script's PATH).
	Curl string
}

// ClassicFile is one rendered file of the classic stack.
type ClassicFile struct {
	// Name is the absolute path the file is rendered for: ClassicOptions.Dir
	// (or the guide's /etc/keepalived and /etc/haproxy) joined with
	// keepalived.conf, check_apiserver.sh or haproxy.cfg. keepalived.conf
	// refers to the check script by this path.
	Name string
	Data []byte
	Mode os.FileMode
}

// Defaults for ClassicOptions, the guide's locations.
const (
	DefaultClassicKeepalivedDir = "/etc/keepalived"
	DefaultClassicHAProxyDir    = "/etc/haproxy"
	DefaultClassicCurl          = "curl"
)

// The classic recipe's fixed values, all from the kubeadm HA guide.
const (
	// classicAuthPass is the guide's example auth_pass, used when the
	// cluster file has no vip.auth.
	classicAuthPass = "42"
	// classicMaxAuthPass is what VRRPv2 simple-text authentication carries
	// (RFC 2338's 8-byte field); keepalived truncates longer passwords
	// with a warning, we truncate them silently to the same bytes.
	classicMaxAuthPass = 8
	// classicMasterPriority is the guide's MASTER priority; BACKUPs get
	// 100, 99, ... in file order (the guide's 100 for the first, then one
	// less for each, so that no two nodes tie).
	classicMasterPriority = 101
)

// Classic renders, for the control-plane node called node, the files of
// the "classic" kubeadm HA recipe that haplane replaces: keepalived holding
// the VIP and haproxy on every control-plane node, configured as the
// kubeadm HA guide ("Options for Software Load Balancing", keepalived and
// haproxy as services) writes them. It exists so that `haplane lab` can run
// the recipe side by side with haplane's agent and measure both the same
// way; the files are therefore the guide's, placeholders filled in from the
// cluster file, with none of its timings changed:
//
//   - keepalived.conf: VRRP version 2, advert_int 1 (the guide leaves both
//     to keepalived's defaults; they are written out so a distribution's
//     different default cannot change the measurement), auth_type PASS,
//     the VIP on the node's interface with the cluster's VRID, and the
//     check_apiserver script every 3s with weight -2, fall 10, rise 2. The
//     first node is MASTER at priority 101, the others BACKUP at 100, 99,
//     ... in file order; the cluster file's node priorities, VRRP version,
//     advert interval, preemption and unicast settings are not used (the
//     guide's keepalived multicasts and preempts). auth_pass is
//     vip.auth.password, or the guide's "42" without one, cut to 8 bytes.
//   - check_apiserver.sh (mode 0755): the guide's script, which fails
//     when https://localhost:PORT/ does not answer within 2s and, while
//     this host holds the VIP, when https://VIP:PORT/ does not, PORT being
//     the load balancer's frontend port. Any HTTP answer counts as up, as
//     in the guide (curl without --fail). The guide's `grep -q VIP` is
//     made an exact match of the address, so a VIP that is a prefix of
//     another address on the host (10.0.0.1 and 10.0.0.10) is not taken
//     for it.
//   - haproxy.cfg: the guide's global and defaults sections and a mode tcp
//     frontend on *:PORT with roundrobin over every node's
//     kube-apiserver, each with a plain `check` (haproxy's default inter
//     2s, fall 3, rise 2). As in the guide, `option ssl-hello-chk` comes
//     after `option httpchk GET /healthz` and replaces it: the check is an
//     SSL hello, not a /healthz request.
//
// The VIP must be IPv4: VRRPv2 is IPv4 only.
func Classic(c *config.Cluster, node string, o ClassicOptions) ([]ClassicFile, error) {
	idx := -1
	for i, n := range c.Nodes {
		if n.Name == node {
			idx = i
			break
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("render: node %q is not in the cluster file", node)
	}
	n := c.Nodes[idx]
	vip := c.VIPAddr()
	if !vip.Is4() {
		return nil, fmt.Errorf("render: classic stack: VIP %q is not an IPv4 address; the guide's keepalived speaks VRRP version 2, which is IPv4 only", c.ControlPlaneEndpoint.VIP)
	}
	prio := classicMasterPriority - idx
	if prio < 1 {
		return nil, fmt.Errorf("render: classic stack: node %q is number %d in the file; priorities 101, 100, ... run out after 101 nodes", node, idx+1)
	}
	for _, m := range c.Nodes {
		if !haproxyName(m.Name) {
			return nil, fmt.Errorf("render: classic stack: node name %q cannot be a haproxy server name (letters, digits, '-', '_', '.' and ':' only)", m.Name)
		}
	}
	kaDir, hapDir := DefaultClassicKeepalivedDir, DefaultClassicHAProxyDir
	if o.Dir != "" {
		if !filepath.IsAbs(o.Dir) || strings.ContainsAny(o.Dir, " \t\n\r\"'!#\\") {
			return nil, fmt.Errorf("render: classic stack: dir %q must be an absolute path without whitespace, quotes, backslashes, ! or #", o.Dir)
		}
		kaDir, hapDir = filepath.Clean(o.Dir), filepath.Clean(o.Dir)
	}
	curl := o.Curl
	if curl == "" {
		curl = DefaultClassicCurl
	}
	pass := classicAuthPass
	if c.VIP.Auth != nil && c.VIP.Auth.Password != "" {
		pass = c.VIP.Auth.Password
	}
	if len(pass) > classicMaxAuthPass {
		pass = pass[:classicMaxAuthPass]
	}
	if strings.ContainsAny(pass, " \t\n\r\"'!#\\{}") {
		return nil, fmt.Errorf("render: classic stack: vip.auth.password cannot be written in keepalived.conf: it holds whitespace, a quote, a backslash, a brace, ! or #")
	}
	iface := c.InterfaceFor(n)
	if iface == "" || strings.ContainsAny(iface, " \t\n\r\"'!#\\{}") {
		return nil, fmt.Errorf("render: classic stack: interface %q of node %q cannot be written in keepalived.conf", iface, node)
	}

	state := "BACKUP"
	if idx == 0 {
		state = "MASTER"
	}
	script := filepath.Join(kaDir, "check_apiserver.sh")
	ep := c.ControlPlaneEndpoint

	var ka bytes.Buffer
	fmt.Fprintf(&ka, `! %s
! keepalived for %s, rendered by haplane: the kubeadm HA guide's recipe.
global_defs {
    router_id LVS_DEVEL
    ! The guide's check script runs as root. keepalived 2.x runs scripts
    ! as the keepalived_script user, which Debian does not create (with
    ! script security on, it then drops the check), and reports a SECURITY
    ! VIOLATION when scripts run without script security. With these two
    ! lines it runs the script as root, once it has checked that only root
    ! can write the script and every folder above it.
    script_user root
    enable_script_security
    ! The guide relies on keepalived's defaults: VRRP version 2, 1s adverts.
    vrrp_version 2
}
vrrp_script check_apiserver {
    script "%s"
    interval 3
    weight -2
    fall 10
    rise 2
}
vrrp_instance VI_1 {
    state %s
    interface %s
    virtual_router_id %d
    priority %d
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass %s
    }
    virtual_ipaddress {
        %s
    }
    track_script {
        check_apiserver
    }
}
`, filepath.Join(kaDir, "keepalived.conf"), node, script, state, iface, c.VIP.VirtualRouterID, prio, pass, vip)

	local := fmt.Sprintf("https://localhost:%d/", ep.Port)
	remote := fmt.Sprintf("https://%s:%d/", vip, ep.Port)
	var sh bytes.Buffer
	fmt.Fprintf(&sh, `#!/bin/sh
# %s
# keepalived's health check for %s, rendered by haplane: the kubeadm HA
# guide's script. It fails when the load balancer's frontend does not answer
# here and, while this host holds the VIP, when it does not answer on the VIP.
errorExit() {
    echo "*** $*" 1>&2
    exit 1
}

%s --silent --max-time 2 --insecure %s -o /dev/null || errorExit "Error GET %s"
if ip addr | grep -qF " %s/"; then
    %s --silent --max-time 2 --insecure %s -o /dev/null || errorExit "Error GET %s"
fi
`, script, node, shellWord(curl), local, local, vip, shellWord(curl), remote, remote)

	var hap bytes.Buffer
	fmt.Fprintf(&hap, `# %s
# haproxy for %s, rendered by haplane: the kubeadm HA guide's recipe.
#---------------------------------------------------------------------
# Global settings
#---------------------------------------------------------------------
global
    # As in the guide. Without a syslog socket at /dev/log haproxy still
    # runs: it drops the logs, with an alert on stderr.
    log /dev/log local0
    log /dev/log local1 notice
    # haproxy -db (foreground) overrides daemon.
    daemon

#---------------------------------------------------------------------
# Defaults for the sections below, as in the guide. The tcp frontend and
# backend ignore the http options (haproxy -c warns of option forwardfor).
#---------------------------------------------------------------------
defaults
    mode                    http
    log                     global
    option                  httplog
    option                  dontlognull
    option http-server-close
    option forwardfor       except 127.0.0.0/8
    option                  redispatch
    retries                 1
    timeout http-request    10s
    timeout queue           20s
    timeout connect         5s
    timeout client          20s
    timeout server          20s
    timeout http-keep-alive 10s
    timeout check           10s

#---------------------------------------------------------------------
# The VIP's frontend: every address, port %d
#---------------------------------------------------------------------
frontend apiserver
    bind *:%d
    mode tcp
    option tcplog
    default_backend apiserver

#---------------------------------------------------------------------
# Round robin over every kube-apiserver. ssl-hello-chk, coming last,
# replaces the httpchk above it, as in the guide.
#---------------------------------------------------------------------
backend apiserver
    option httpchk GET /healthz
    http-check expect status 200
    mode tcp
    option ssl-hello-chk
    balance     roundrobin
`, filepath.Join(hapDir, "haproxy.cfg"), node, ep.Port, ep.Port)
	for _, m := range c.Nodes {
		fmt.Fprintf(&hap, "    server %s %s check\n", m.Name, ipPort(m.Address, ep.APIServerPort))
	}

	return []ClassicFile{
		{Name: filepath.Join(kaDir, "keepalived.conf"), Data: ka.Bytes(), Mode: 0o644},
		{Name: script, Data: sh.Bytes(), Mode: 0o755},
		{Name: filepath.Join(hapDir, "haproxy.cfg"), Data: hap.Bytes(), Mode: 0o644},
	}, nil
}

// ipPort writes addr:port, bracketing an IPv6 address.
func ipPort(addr string, port int) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}

// haproxyName reports whether s is a valid haproxy proxy or server name.
func haproxyName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '-', r == '_', r == '.', r == ':':
		default:
			return false
		}
	}
	return true
}

// shellWord quotes s for sh when it holds anything but plain path
// characters.
func shellWord(s string) string {
	plain := s != ""
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			strings.ContainsRune("/._-+=:,@%", r):
		default:
			plain = false
		}
	}
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
