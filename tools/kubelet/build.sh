#!/usr/bin/env bash
# Builds what a lab host needs beside kubelet to be a real Kubernetes node:
# containerd (with its runc shim and ctr), runc, crictl, etcd (for the
# etcd image) and the CNI plugins a pod network needs (bridge, host-local,
# loopback, into cni/), each from its own module at a pinned version through the Go
# module proxy, into one cache directory keyed by those versions, and prints
# that directory. kubelet itself
# comes from tools/k8s/build.sh (same Kubernetes source as kubeadm).
#
#   tools/kubelet/build.sh
#
# `go install MODULE/cmd@VERSION` builds each one with its own go.mod, so no
# module of this repository pins their dependencies. A binary is rebuilt only
# when the module version recorded in it (go version -m) is not the pinned one;
# the Go build cache makes a rebuild after a version bump cheap for the others.
#
# runc needs cgo (its nsenter part is C) and, for seccomp, libseccomp's
# headers (Debian: apt-get install libseccomp-dev). kubeadm's static pods ask
# for the RuntimeDefault seccomp profile, which a runc built without seccomp
# refuses ("config provided but seccomp not supported"), so without the
# headers runc is built without it and the kubelet lab cannot run pods.
set -euo pipefail
containerd_version=v2.4.2
runc_version=v1.5.3
crictl_version=v1.37.0
# etcd for kubeadm's etcd static pod (its image tag is 3.7.0-0).
etcd_version=v3.7.0
cni_version=v1.10.0
cache=${XDG_CACHE_HOME:-$HOME/.cache}/haplane/node/containerd-$containerd_version-runc-$runc_version-crictl-$crictl_version-etcd-$etcd_version-cni-$cni_version
mkdir -p "$cache"

# built BINARY MODULE VERSION: the binary is there and was built from MODULE
# (its main module or a dependency) at VERSION.
built() {
  [ -x "$cache/$1" ] || return 1
  local got
  got=$(go version -m "$cache/$1" 2>/dev/null | awk -v m="$2" '($1=="mod" || $1=="dep") && $2==m {print $3}')
  [ "$got" = "$3" ]
}

start=$SECONDS
m=github.com/containerd/containerd/v2
want=()
for b in containerd containerd-shim-runc-v2 ctr; do
  built "$b" "$m" "$containerd_version" || want+=("$m/cmd/$b@$containerd_version")
done
if [ ${#want[@]} -gt 0 ]; then
  echo "build.sh: building containerd $containerd_version (${#want[@]} commands) into $cache" >&2
  GOBIN=$cache CGO_ENABLED=0 GOFLAGS= go install -trimpath -tags no_btrfs,no_devmapper,no_zfs \
    -ldflags "-s -w -X $m/version.Version=$containerd_version" "${want[@]}"
fi

m=github.com/opencontainers/runc
tags=urfave_cli_no_docs
if pkg-config --exists libseccomp 2>/dev/null; then
  tags=seccomp,$tags
else
  echo "build.sh: no libseccomp headers (apt-get install libseccomp-dev): runc without seccomp cannot run kubeadm's static pods" >&2
fi
if ! built runc "$m" "$runc_version" || ! go version -m "$cache/runc" | grep -q -- "-tags=$tags\$"; then
  echo "build.sh: building runc $runc_version (cgo, tags $tags) into $cache" >&2
  GOBIN=$cache CGO_ENABLED=1 GOFLAGS= go install -trimpath -tags "$tags" \
    -ldflags "-s -w -X main.gitCommit=$runc_version" "$m@$runc_version"
fi

m=sigs.k8s.io/cri-tools
if ! built crictl "$m" "$crictl_version"; then
  echo "build.sh: building crictl $crictl_version into $cache" >&2
  GOBIN=$cache CGO_ENABLED=0 GOFLAGS= go install -trimpath \
    -ldflags "-s -w -X $m/pkg/version.Version=$crictl_version" "$m/cmd/crictl@$crictl_version"
fi
# etcd's server module has replace lines for its sibling modules, which
# `go install @version` refuses: build it from a module made for it in the
# cache that requires it, so the siblings resolve at the same version.
m=go.etcd.io/etcd/server/v3
if ! built etcd "$m" "$etcd_version"; then
  echo "build.sh: building etcd $etcd_version into $cache" >&2
  mod=$cache/etcd-module
  mkdir -p "$mod"
  printf 'module github.com/haplane/haplane/tools/etcd\n\ngo 1.26.0\n\nrequire %s %s\n' "$m" "$etcd_version" >"$mod/go.mod"
  printf 'package etcd\n\nimport _ "%s"\n' "$m" >"$mod/tools.go"
  (cd "$mod" && GOFLAGS= go mod tidy && CGO_ENABLED=0 GOFLAGS= go build -trimpath -ldflags "-s -w" -o "$cache/etcd" "$m")
fi
m=github.com/containernetworking/plugins
want=()
for b in main/bridge ipam/host-local main/loopback; do
  built "cni/${b#*/}" "$m" "$cni_version" || want+=("$m/plugins/$b@$cni_version")
done
if [ ${#want[@]} -gt 0 ]; then
  echo "build.sh: building the CNI plugins $cni_version (${#want[@]}) into $cache/cni" >&2
  GOBIN=$cache/cni CGO_ENABLED=0 GOFLAGS= go install -trimpath -ldflags "-s -w" "${want[@]}"
fi
[ $((SECONDS - start)) -lt 2 ] || echo "build.sh: built in $((SECONDS - start))s" >&2
echo "$cache"
