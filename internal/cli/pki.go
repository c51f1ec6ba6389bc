package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// pkiCmd is being built; see the issue tracker.
func (a *app) pkiCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "pki",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("pki: not available in this build yet")
		},
	}
}
