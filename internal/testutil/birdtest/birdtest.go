// Package birdtest finds BIRD 2 for the tests that peer with a real
// router: they need root (namespaces, BGP's port) and Debian's bird2, and
// skip with a message that says which is missing. Only tests import it.
package birdtest

import (
	"os"
	"os/exec"
	"testing"
)

// Require returns the paths of bird and birdc, or skips t.
func Require(t testing.TB) (bird, birdc string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, BGP's port 179)")
	}
	bird, err := exec.LookPath("bird")
	if err != nil {
		t.Skip("BIRD 2 is not installed (apt-get install bird2): ", err)
	}
	birdc, err = exec.LookPath("birdc")
	if err != nil {
		t.Skip("birdc is not installed (apt-get install bird2): ", err)
	}
	return bird, birdc
}
