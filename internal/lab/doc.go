// Package lab composes a whole HA control plane on one machine, for
// `haplane lab` and the end-to-end tests: hosts made of network namespaces
// (internal/netns) for three control-plane nodes, a client and optional
// separate etcd members; a Stack per way of running them (haplane's agent,
// or keepalived and haproxy as in the kubeadm guides) that decides which
// processes each host runs and when the lab has settled; the lab's state
// on disk; a client-side observer of the API through the VIP; and the
// chaos scenarios, judged against their bounds and written as reports.
//
// It uses the ip command from iproute2 and needs root.
package lab
