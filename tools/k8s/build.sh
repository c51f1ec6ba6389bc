#!/usr/bin/env bash
# Builds real Kubernetes binaries from the Go module proxy into a cache
# directory keyed by version, and prints that directory. The module in this
# folder requires k8s.io/kubernetes with a replace line for each staging
# module; the Go build cache makes a second run take seconds.
#
#   tools/k8s/build.sh [VERSION] [BINARY...]
#   VERSION defaults to the one pinned in go.mod (v1.37.1); BINARY defaults to
#   kubeadm kube-apiserver kube-controller-manager kube-scheduler kubectl.
#   kubelet is built only when asked for (the kubelet lab does; see
#   tools/kubelet/build.sh for containerd, runc and crictl).
#
# Another version (v1.MINOR.PATCH) is built from a copy of this module made
# for it in the cache: the same staging modules replaced at v0.MINOR.PATCH,
# its go.sum resolved from the module proxy (`go mod tidy`), so the first
# build of a version also downloads its dependencies.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pinned=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/go.mod")
version=${1:-$pinned}
shift || true
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(kubeadm kube-apiserver kube-controller-manager kube-scheduler kubectl)
if ! [[ $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
  echo "build.sh: version $version: want v1.MINOR.PATCH, e.g. $pinned" >&2
  exit 2
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/haplane/k8s/$version
mod=$here
if [ "$version" != "$pinned" ]; then
  staging=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}
  mod=$cache/module
  if [ ! -f "$mod/go.sum" ] || [ "$here/go.mod" -nt "$mod/go.sum" ]; then
    echo "build.sh: making a module for $version (staging modules at $staging) in $mod" >&2
    mkdir -p "$mod"
    {
      echo "module github.com/haplane/haplane/tools/k8s"
      echo
      awk '$1=="go"' "$here/go.mod"
      echo
      echo "require k8s.io/kubernetes $version"
      echo
      echo "replace ("
      awk -v v="$staging" '$2=="=>" && $3 ~ /^k8s\.io\// {printf "\t%s => %s %s\n", $1, $3, v}' "$here/go.mod"
      echo ")"
    } >"$mod/go.mod"
    # A blank import so tidy keeps what the commands need.
    printf 'package k8s\n\nimport (\n' >"$mod/tools.go"
    for b in kubeadm kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do
      printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b" >>"$mod/tools.go"
    done
    printf ')\n' >>"$mod/tools.go"
    rm -f "$mod/go.sum"
    (cd "$mod" && go mod tidy) || { rm -f "$mod/go.sum"; echo "build.sh: $version: could not resolve its modules" >&2; exit 1; }
  fi
fi
mkdir -p "$cache"
minor=$(echo "$version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
# The daemons answer --version, kubectl version --client, kubeadm version.
has_version() {
  local out
  out=$("$1" --version 2>/dev/null || "$1" version --client 2>/dev/null || "$1" version 2>/dev/null || true)
  [[ $out == *"$2"* ]]
}
pkgs=()
for b in "${bins[@]}"; do
  if [ -x "$cache/$b" ] && [ "$cache/$b" -nt "$mod/go.mod" ] && has_version "$cache/$b" "$version"; then
    continue
  fi
  pkgs+=("k8s.io/kubernetes/cmd/$b")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "build.sh: building ${pkgs[*]} ($version) into $cache; about 7 minutes on 2 cores the first time" >&2
  (cd "$mod" && CGO_ENABLED=0 go build ${HAPLANE_K8S_VERBOSE:+-v} -trimpath -ldflags "$ldflags" -o "$cache/" "${pkgs[@]}")
fi
echo "$cache"
