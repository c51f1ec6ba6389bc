package archtest

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/haplane/haplane"

type pkg struct {
	ImportPath string
	Dir        string
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

// commandLine is where the process meets its environment: flags, the
// environment, the terminal. Everything else takes plain options, so that
// a library user and a test can set every setting, and `--help`, the
// cluster file and status show all of them.
var commandLine = []string{"cmd/haplane", "internal/cli"}

func TestOnlyTheCommandLineReadsTheEnvironment(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if slices.Contains(commandLine, rel) {
			continue
		}
		for _, f := range p.GoFiles {
			for _, at := range envReads(t, filepath.Join(p.Dir, f)) {
				t.Errorf("%s: %s reads the environment: settings are options (a cluster-file field or a flag in internal/cli), not environment variables a package reads", at, rel)
			}
		}
	}
}

// envReads returns the positions of os.Getenv and os.LookupEnv calls in
// file. (os.Environ passed on to a child process is not a read.)
func envReads(t *testing.T, file string) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	osName := ""
	for _, imp := range f.Imports {
		if imp.Path.Value == `"os"` {
			osName = "os"
			if imp.Name != nil {
				osName = imp.Name.Name
			}
		}
	}
	if osName == "" {
		return nil
	}
	var at []string
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); ok && id.Name == osName && (sel.Sel.Name == "Getenv" || sel.Sel.Name == "LookupEnv") {
			at = append(at, fset.Position(sel.Pos()).String())
		}
		return true
	})
	return at
}

func TestEnvReadsAreFound(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "x.go")
	src := "package x\n\nimport sys \"os\"\n\nvar a = sys.Getenv(\"A\")\n\nfunc b() { _, _ = sys.LookupEnv(\"B\"); _ = sys.Environ() }\n"
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := envReads(t, file); len(got) != 2 {
		t.Errorf("envReads found %v, want the Getenv and the LookupEnv", got)
	}
}

func TestCobraOnlyInTheCommandLine(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if rel == "internal/cli" {
			continue
		}
		for _, imp := range p.Imports {
			if imp == "github.com/spf13/cobra" || strings.HasPrefix(imp, "github.com/spf13/cobra/") {
				t.Errorf("%s imports %s: commands and flags live in internal/cli; other packages take plain options", rel, imp)
			}
		}
	}
}
