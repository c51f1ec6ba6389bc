package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/haplane/haplane"

type pkg struct {
	ImportPath string
	Doc        string
	Imports    []string
	GoFiles    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	return pkgs
}

// composers may import any internal package: they wire the leaves.
var composers = []string{"cmd/haplane", "internal/cli", "internal/agent", "internal/lab",
	"internal/status", // gathers the agent's document with the etcd and election views
}

// shared packages are the schema every part reads: any package may import
// them (they import no other internal package).
var shared = []string{"internal/config"}

// allowed lists the few leaf-to-leaf imports that are part of one job: a
// subpackage using its parent's pure core, or the VIP runtime driving the
// parts it is made of.
var allowed = map[string][]string{
	"internal/vrrp/vrrpnet": {"internal/vrrp"},
	"internal/vrrp/speaker": {"internal/vrrp", "internal/vrrp/vrrpnet", "internal/vip"},
}

// stdlibOnly packages hold pure logic and must stay free of dependencies.
var stdlibOnly = []string{"internal/vrrp", "internal/pki"}

func TestLeavesDoNotImportEachOther(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if slices.Contains(composers, rel) || !strings.HasPrefix(rel, "internal/") {
			continue
		}
		if slices.Contains(shared, rel) {
			for _, imp := range p.Imports {
				if strings.HasPrefix(imp, module+"/") {
					t.Errorf("%s imports %s: the shared schema must not depend on other internal packages", rel, imp)
				}
			}
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(imp, module+"/")
			if !slices.Contains(allowed[rel], dep) && !slices.Contains(shared, dep) {
				t.Errorf("%s imports %s: leaf packages do not import each other; declare an interface in the consumer and wire it in internal/agent or internal/cli", rel, dep)
			}
		}
	}
}

func TestPurePackagesUseOnlyTheStandardLibrary(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if !slices.Contains(stdlibOnly, rel) {
			continue
		}
		for _, imp := range p.Imports {
			first, _, _ := strings.Cut(imp, "/")
			if strings.Contains(first, ".") {
				t.Errorf("%s imports %s: it must use only the standard library", rel, imp)
			}
		}
	}
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		if len(p.GoFiles) == 0 {
			continue
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment saying what it owns", p.ImportPath)
		}
	}
}
