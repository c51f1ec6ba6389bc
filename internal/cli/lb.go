package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// lbCmd is being built; see the issue tracker.
func (a *app) lbCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "lb",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("lb: not available in this build yet")
		},
	}
}
