package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// vipCmd is being built; see the issue tracker.
func (a *app) vipCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "vip",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("vip: not available in this build yet")
		},
	}
}
