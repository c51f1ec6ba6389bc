#!/usr/bin/env bash
# Builds real Kubernetes binaries from the Go module proxy into a cache
# directory keyed by version, and prints that directory. The module in this
# folder requires k8s.io/kubernetes with a replace line for each staging
# module; the Go build cache makes a second run take seconds.
#
#   tools/k8s/build.sh [VERSION] [BINARY...]
#   VERSION defaults to the one pinned in go.mod (v1.37.1); BINARY defaults to
#   kubeadm kube-apiserver kube-controller-manager kube-scheduler kubectl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=${1:-$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/go.mod")}
shift || true
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(kubeadm kube-apiserver kube-controller-manager kube-scheduler kubectl)
pinned=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/go.mod")
if [ "$version" != "$pinned" ]; then
  echo "build.sh: go.mod pins $pinned; only that version can be built from this module" >&2
  exit 2
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/haplane/k8s/$version
mkdir -p "$cache"
minor=$(echo "$version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
pkgs=()
for b in "${bins[@]}"; do
  if [ -x "$cache/$b" ] && [ "$cache/$b" -nt "$here/go.mod" ] && [ "$("$cache/$b" version 2>/dev/null | grep -c "$version")" -gt 0 ]; then
    continue
  fi
  pkgs+=("k8s.io/kubernetes/cmd/$b")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "build.sh: building ${pkgs[*]} ($version) into $cache; about 7 minutes on 2 cores the first time" >&2
  (cd "$here" && CGO_ENABLED=0 go build ${HAPLANE_K8S_VERBOSE:+-v} -trimpath -ldflags "$ldflags" -o "$cache/" "${pkgs[@]}")
fi
echo "$cache"
