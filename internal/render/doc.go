// Package render turns the cluster file into the files other tools read:
// kubeadm configurations, static pod manifests and systemd units. Rendering
// is pure (cluster in, bytes out) and golden-tested; writing is the caller's.
package render
