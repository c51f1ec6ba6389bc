// Package etcdnode owns haplane's etcd members: the configuration of one
// embedded member (go.etcd.io/etcd/server/v3/embed, kubeadm's flags, TLS
// with client-certificate auth on the client and peer ports), the pure
// cluster plan that decides how a node enters the cluster (bootstrap, join
// as a learner, clean stale entries) without losing quorum, the membership
// operations that carry a plan out, the health status of every member, and
// snapshots (save with hash verification, scheduled with retention, restore
// of every member from one snapshot).
//
// Membership changes are always checked against quorum first: a step that
// would leave fewer healthy voting members than a quorum of the voting
// members after the step is refused with ErrQuorum.
package etcdnode
