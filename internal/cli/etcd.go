package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// etcdCmd is being built; see the issue tracker.
func (a *app) etcdCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "etcd",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("etcd: not available in this build yet")
		},
	}
}
