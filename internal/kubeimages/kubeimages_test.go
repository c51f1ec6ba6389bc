package kubeimages

import (
	"archive/tar"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestWriteReadBack writes two images to one tarball and reads each back
// by its reference: config, entrypoint and the files of its layer.
func TestWriteReadBack(t *testing.T) {
	p := filepath.Join(t.TempDir(), "images.tar")
	imgs := []Image{
		{Ref: "registry.k8s.io/pause:3.10.2", Files: []File{{Path: "/pause", Data: []byte("pause-binary")}}, Entrypoint: []string{"/pause"}},
		{Ref: "registry.k8s.io/etcd:3.7.0-0", Files: []File{{Path: BinDir + "/etcd", Data: []byte("etcd-binary"), Mode: 0o700}}, Entrypoint: []string{BinDir + "/etcd"}, Cmd: []string{"--help"}},
	}
	if err := WriteTarball(p, imgs...); err != nil {
		t.Fatal(err)
	}
	for _, want := range imgs {
		tag, err := name.NewTag(want.Ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(p, &tag)
		if err != nil {
			t.Fatalf("%s: %v", want.Ref, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
			t.Errorf("%s: platform %s/%s", want.Ref, cf.OS, cf.Architecture)
		}
		if !reflect.DeepEqual(cf.Config.Entrypoint, want.Entrypoint) || !reflect.DeepEqual(cf.Config.Cmd, want.Cmd) {
			t.Errorf("%s: entrypoint %q cmd %q, want %q %q", want.Ref, cf.Config.Entrypoint, cf.Config.Cmd, want.Entrypoint, want.Cmd)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: %d layers, %v", want.Ref, len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		modes := map[string]int64{}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			got[h.Name], modes[h.Name] = string(b), h.Mode
		}
		rc.Close()
		f := want.Files[0]
		key := strings.TrimPrefix(f.Path, "/")
		if got[key] != string(f.Data) {
			t.Errorf("%s: %s holds %q, want %q (layer: %v)", want.Ref, key, got[key], f.Data, got)
		}
		if wantMode := int64(f.Mode.Perm()); wantMode != 0 && modes[key] != wantMode {
			t.Errorf("%s: %s mode %o, want %o", want.Ref, key, modes[key], wantMode)
		}
		if modes["tmp/"] != 0o1777 {
			t.Errorf("%s: tmp/ mode %o, want 1777", want.Ref, modes["tmp/"])
		}
	}
}

func TestBuildBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		img  Image
		want string
	}{
		{"no tag", Image{Ref: "registry.k8s.io/pause"}, "REGISTRY/NAME:TAG"},
		{"relative path", Image{Ref: "registry.k8s.io/pause:1", Files: []File{{Path: "pause"}}}, "clean absolute path"},
		{"missing source", Image{Ref: "registry.k8s.io/pause:1", Files: []File{{Path: "/pause", Source: "/nonexistent/pause"}}}, "reading /nonexistent/pause"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.img)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestForList(t *testing.T) {
	list := []string{
		"registry.k8s.io/kube-apiserver:v1.37.1",
		"registry.k8s.io/kube-controller-manager:v1.37.1",
		"registry.k8s.io/kube-scheduler:v1.37.1",
		"registry.k8s.io/kube-proxy:v1.37.1",
		"registry.k8s.io/coredns/coredns:v1.14.6",
		"registry.k8s.io/pause:3.10.2",
		"registry.k8s.io/etcd:3.7.0-0",
		"",
	}
	bins := Binaries{K8sDir: "/k8s", Etcd: "/bin/etcd", Labpod: "/bin/labpod"}
	imgs, err := ForList(list, bins)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Image{}
	for _, img := range imgs {
		got[img.Ref] = img
	}
	for ref, src := range map[string]string{
		"registry.k8s.io/kube-apiserver:v1.37.1": "/k8s/kube-apiserver",
		"registry.k8s.io/etcd:3.7.0-0":           "/bin/etcd",
		"registry.k8s.io/pause:3.10.2":           "/bin/labpod",
		WorkloadRef:                              "/bin/labpod",
	} {
		if img, ok := got[ref]; !ok || img.Files[0].Source != src {
			t.Errorf("%s: %+v, want a file from %s", ref, img, src)
		}
	}
	if len(imgs) != 6 {
		t.Errorf("%d images, want 6 (no kube-proxy, no coredns): %v", len(imgs), imgs)
	}
	if got["registry.k8s.io/etcd:3.7.0-0"].Files[0].Path != BinDir+"/etcd" {
		t.Errorf("etcd is not on the PATH: %+v", got["registry.k8s.io/etcd:3.7.0-0"])
	}
	for _, tc := range []struct {
		list []string
		want string
	}{
		{list[1:], "no kube-apiserver image"},
		{append([]string{"registry.k8s.io/other:1"}, list...), "no image is built for other"},
		{[]string{"not a ref:"}, "kubeadm listed"},
	} {
		if _, err := ForList(tc.list, bins); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ForList(%q): %v, want %q", tc.list, err, tc.want)
		}
	}
}
