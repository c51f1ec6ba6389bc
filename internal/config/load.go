package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// maxFileSize bounds what Load reads: a cluster file is a few kilobytes, and
// a bound keeps a wrong path (a disk image, /dev/zero) from eating memory.
const maxFileSize = 1 << 20

// Load reads, defaults and validates the cluster file at path. When the file
// does not validate the error is *Errors, listing every problem.
func Load(path string) (*Cluster, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, &Errors{List: []FieldError{{File: path, Msg: fmt.Sprintf("file is larger than %d bytes; is this the cluster file?", maxFileSize)}}}
	}
	return Parse(path, data)
}

// Parse decodes data (called name in messages), applies defaults and
// validates. Unknown fields, values of the wrong type and every semantic
// problem are reported together, sorted by line.
func Parse(name string, data []byte) (*Cluster, error) {
	d := &decoder{file: name, lines: map[string]int{}}
	root, err := d.parseYAML(data)
	if err != nil {
		return nil, &Errors{List: []FieldError{*err}}
	}
	var c Cluster
	d.decode(root, reflect.ValueOf(&c).Elem(), "")
	c.SetDefaults()
	for _, fe := range c.validate() {
		if d.failed(fe.Path) {
			continue // already reported as a decode error; don't pile on
		}
		fe.File = name
		fe.Line = d.lineFor(fe.Path)
		d.errs = append(d.errs, fe)
	}
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
		return nil, &Errors{List: d.errs}
	}
	return &c, nil
}

// decoder turns a YAML node tree into a Cluster by reflection over the json
// tags, recording the line of every field it sees so validation errors can
// point at the file.
type decoder struct {
	file  string
	lines map[string]int // field path -> line of its key (or item)
	bad   []string       // paths that failed to decode
	errs  []FieldError
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (d *decoder) parseYAML(data []byte) (*yaml.Node, *FieldError) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{File: d.file, Msg: "file is empty"}
		}
		return nil, d.syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &FieldError{File: d.file, Line: extra.Line, Msg: "a second YAML document is not allowed; one cluster per file"}
	} else if !errors.Is(err, io.EOF) {
		return nil, d.syntaxError(err)
	}
	if len(doc.Content) == 0 {
		return nil, &FieldError{File: d.file, Msg: "file is empty"}
	}
	return doc.Content[0], nil
}

func (d *decoder) syntaxError(err error) *FieldError {
	msg := err.Error()
	fe := &FieldError{File: d.file}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		fe.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	fe.Msg = "invalid YAML: " + msg
	return fe
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.bad = append(d.bad, path)
	d.errs = append(d.errs, FieldError{File: d.file, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// failed reports whether path, or a field it lies in or contains, already
// failed to decode.
func (d *decoder) failed(path string) bool {
	for _, b := range d.bad {
		if b == "" || path == b || strings.HasPrefix(path, b+".") || strings.HasPrefix(path, b+"[") ||
			strings.HasPrefix(b, path+".") || strings.HasPrefix(b, path+"[") {
			return true
		}
	}
	return false
}

// lineFor returns the line of path, or of its nearest parent present in the
// file (a missing required field points at the mapping that lacks it).
func (d *decoder) lineFor(path string) int {
	for p := path; ; p = parentPath(p) {
		if l, ok := d.lines[p]; ok {
			return l
		}
		if p == "" {
			return 0
		}
	}
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.Tag {
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!null":
		return "null"
	}
	return fmt.Sprintf("%q", n.Value)
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if _, seen := d.lines[path]; !seen {
		d.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the default
	}
	if v.CanAddr() && reflect.PointerTo(v.Type()).Implements(textUnmarshaler) {
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "expected a string, got %s", kindName(n))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.fail(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "expected a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			hint := ""
			if n.Kind == yaml.ScalarNode {
				hint = " (quote it to make it a string)"
			}
			d.fail(n, path, "expected a string, got %s%s", kindName(n), hint)
			return
		}
		v.SetString(n.Value)
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			d.fail(n, path, "expected a whole number, got %s", kindName(n))
			return
		}
		i, err := strconv.ParseInt(n.Value, 0, 32)
		if err != nil {
			d.fail(n, path, "number %s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Uint32:
		// AS numbers: four octets (RFC 6793), beyond an int32.
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			d.fail(n, path, "expected a whole number, got %s", kindName(n))
			return
		}
		u, err := strconv.ParseUint(n.Value, 10, 32)
		if err != nil {
			d.fail(n, path, "number %s is out of range 0..%d", n.Value, uint32(math.MaxUint32))
			return
		}
		v.SetUint(u)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			d.fail(n, path, "expected true or false, got %s", kindName(n))
			return
		}
		b, err := strconv.ParseBool(strings.ToLower(n.Value))
		if err != nil {
			d.fail(n, path, "expected true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	default:
		// Only reachable if types.go gains a field kind this decoder lacks.
		d.fail(n, path, "internal: cannot decode into %s", v.Type())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	fields := fieldsByName(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "keys must be plain names")
			continue
		}
		fp := join(path, k.Value)
		if k.Value == "<<" {
			d.fail(k, path, "YAML merge keys (<<) are not supported; write the fields out")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.fail(k, fp, "duplicate field (first set on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		idx, ok := fields[k.Value]
		if !ok {
			d.fail(k, fp, "unknown field%s", suggest(k.Value, fields))
			continue
		}
		d.lines[fp] = k.Line
		d.decode(val, v.Field(idx), fp)
	}
}

// fieldsByName maps json tag names to field indexes.
func fieldsByName(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		m[name] = i
	}
	return m
}

// suggest names a known field that differs from name only in case or by a
// typo of one or two characters.
func suggest(name string, fields map[string]int) string {
	best, bestDist := "", 3
	for f := range fields {
		if strings.EqualFold(f, name) {
			return fmt.Sprintf(" (did you mean %q?)", f)
		}
		if dd := editDistance(strings.ToLower(f), strings.ToLower(name)); dd < bestDist || (dd == bestDist && f < best) {
			best, bestDist = f, dd
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
