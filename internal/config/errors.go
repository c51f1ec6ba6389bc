package config

import (
	"fmt"
	"strings"
)

// FieldError is one problem in the cluster file.
type FieldError struct {
	File string `json:"file"`           // file name as given to Load/Parse
	Line int    `json:"line,omitempty"` // 1-based; 0 when unknown
	Path string `json:"path,omitempty"` // field path such as "nodes[1].address"; empty for the whole file
	Msg  string `json:"message"`        // what is wrong
}

// Error formats the problem as "file:LINE: field.path: what is wrong".
func (e FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in line order.
type Errors struct {
	List []FieldError
}

func (e *Errors) Error() string {
	parts := make([]string, len(e.List))
	for i, fe := range e.List {
		parts[i] = fe.Error()
	}
	return strings.Join(parts, "\n")
}
