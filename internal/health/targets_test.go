package health

import (
	"slices"
	"testing"
)

func TestTargets(t *testing.T) {
	got := Targets([]string{"10.77.0.11:6443", "10.77.0.12:6443"})
	if want := []Target{{Addr: "10.77.0.11:6443"}, {Addr: "10.77.0.12:6443"}}; !slices.Equal(got, want) {
		t.Errorf("Targets = %+v, want %+v", got, want)
	}
	if got := Targets(nil); got == nil || len(got) != 0 {
		t.Errorf("Targets(nil) = %#v, want an empty slice", got)
	}
}
