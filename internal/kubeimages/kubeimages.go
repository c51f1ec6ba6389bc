// Package kubeimages builds, without a registry or a container daemon, the
// container images a kubelet lab host runs: kube-apiserver,
// kube-controller-manager, kube-scheduler, etcd, pause and a small workload,
// each one layer holding static binaries built on this machine, under the
// exact references `kubeadm config images list` prints, written as a
// docker-archive tarball that `ctr images import` reads.
package kubeimages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BinDir is where an image's binaries go, on its PATH: kubeadm's static pods
// name their command (kube-apiserver, etcd) without a folder.
const BinDir = "/usr/local/bin"

// File is one file of an image's layer: from Source on disk, or Data.
type File struct {
	Path   string // absolute, in the image
	Source string
	Data   []byte
	Mode   os.FileMode
}

// Image is what to build: a reference and the files of its only layer.
type Image struct {
	Ref        string // e.g. registry.k8s.io/kube-apiserver:v1.37.1
	Files      []File
	Entrypoint []string
	Cmd        []string
}

// epoch is every file's and the config's time, so the same binaries make
// the same image digest.
var epoch = time.Unix(0, 0).UTC()

// layerTar writes the files, with their parent folders and a /tmp, as a tar.
func layerTar(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{"tmp": true}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return nil, fmt.Errorf("kubeimages: file %q: want a clean absolute path", f.Path)
		}
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			dirs[strings.TrimPrefix(d, "/")] = true
		}
	}
	names := make([]string, 0, len(dirs))
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names) // parents before children
	for _, d := range names {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		data := f.Data
		if f.Source != "" {
			b, err := os.ReadFile(f.Source)
			if err != nil {
				return nil, fmt.Errorf("kubeimages: reading %s for %s: %w", f.Source, f.Path, err)
			}
			data = b
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.Path, "/"), Mode: int64(mode.Perm()), Size: int64(len(data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Build makes img as a v1.Image for this machine's architecture.
func Build(img Image) (v1.Image, error) {
	if _, err := name.NewTag(img.Ref, name.StrictValidation); err != nil {
		return nil, fmt.Errorf("kubeimages: image %q: want REGISTRY/NAME:TAG: %w", img.Ref, err)
	}
	data, err := layerTar(img.Files)
	if err != nil {
		return nil, fmt.Errorf("kubeimages: image %s: %w", img.Ref, err)
	}
	// The binaries are large and the machine is shared: the fastest gzip,
	// compressed once and kept for both the digest and the write.
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("kubeimages: image %s: layer: %w", img.Ref, err)
	}
	out, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "haplane kubeimages"}})
	if err != nil {
		return nil, fmt.Errorf("kubeimages: image %s: %w", img.Ref, err)
	}
	cf, err := out.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("kubeimages: image %s: config: %w", img.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", runtime.GOARCH, v1.Time{Time: epoch}
	cf.Config.Entrypoint, cf.Config.Cmd = img.Entrypoint, img.Cmd
	cf.Config.Env = []string{"PATH=" + BinDir + ":/usr/bin:/bin"}
	out, err = mutate.ConfigFile(out, cf)
	if err != nil {
		return nil, fmt.Errorf("kubeimages: image %s: config: %w", img.Ref, err)
	}
	return out, nil
}

// WriteTarball builds imgs and writes them to one docker-archive tarball at
// p, each under its reference.
func WriteTarball(p string, imgs ...Image) error {
	refs := make(map[name.Reference]v1.Image, len(imgs))
	for _, img := range imgs {
		built, err := Build(img)
		if err != nil {
			return err
		}
		tag, _ := name.NewTag(img.Ref, name.StrictValidation) // checked by Build
		refs[tag] = built
	}
	if err := tarball.MultiRefWriteToFile(p, refs); err != nil {
		return fmt.Errorf("kubeimages: writing %s: %w", p, err)
	}
	return nil
}

// Binaries are the static binaries the images are made of.
type Binaries struct {
	K8sDir string // kube-apiserver, kube-controller-manager, kube-scheduler (tools/k8s/build.sh)
	Etcd   string // the etcd binary (tools/kubelet/build.sh)
	Labpod string // the labpod binary (BuildLabpod)
}

// WorkloadRef is the lab's workload image, which no kubeadm list names.
const WorkloadRef = "registry.k8s.io/haplane/labpod:v1"

// ForList returns the images for the references kubeadm lists (`kubeadm
// config images list` output, one a line), by the last part of each name,
// plus the workload image. kube-proxy and coredns are left out: the lab
// skips kubeadm's addon phases that run them.
func ForList(list []string, bins Binaries) ([]Image, error) {
	var imgs []Image
	seen := map[string]bool{}
	for _, ref := range list {
		ref = strings.TrimSpace(ref)
		if ref == "" {
			continue
		}
		tag, err := name.NewTag(ref, name.StrictValidation)
		if err != nil {
			return nil, fmt.Errorf("kubeimages: kubeadm listed %q: %w", ref, err)
		}
		base := path.Base(tag.RepositoryStr())
		var img Image
		switch base {
		case "kube-apiserver", "kube-controller-manager", "kube-scheduler":
			img = binImage(ref, base, filepath.Join(bins.K8sDir, base))
		case "etcd":
			img = binImage(ref, "etcd", bins.Etcd)
		case "pause":
			img = Image{Ref: ref, Files: []File{{Path: "/pause", Source: bins.Labpod}}, Entrypoint: []string{"/pause"}}
		case "kube-proxy", "coredns":
			continue
		default:
			return nil, fmt.Errorf("kubeimages: kubeadm listed %s: no image is built for %s", ref, base)
		}
		seen[base] = true
		imgs = append(imgs, img)
	}
	for _, want := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "pause"} {
		if !seen[want] {
			return nil, fmt.Errorf("kubeimages: the kubeadm list has no %s image", want)
		}
	}
	imgs = append(imgs, Image{Ref: WorkloadRef, Files: []File{{Path: BinDir + "/labpod", Source: bins.Labpod}},
		Entrypoint: []string{BinDir + "/labpod"}, Cmd: []string{"serve", ":8080"}})
	return imgs, nil
}

// binImage is an image of one binary on the PATH, run by the pod's command.
func binImage(ref, bin, src string) Image {
	return Image{Ref: ref, Files: []File{{Path: BinDir + "/" + bin, Source: src}}, Entrypoint: []string{BinDir + "/" + bin}}
}

// BuildLabpod builds the labpod command (pause and workload) static into
// dir with the go command, from the module that holds this package (a
// haplane checkout; the build cache makes it seconds after the first).
func BuildLabpod(ctx context.Context, moduleDir, dir string) (string, error) {
	out := filepath.Join(dir, "labpod")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./internal/kubeimages/labpod")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("kubeimages: go build labpod in %s: %w: %s", moduleDir, err, strings.TrimSpace(string(b)))
	}
	return out, nil
}
