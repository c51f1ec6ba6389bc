package cli

import "github.com/spf13/cobra"

// commands lists the top-level subcommands. Each lives in its own file and
// is owned by the part of haplane it drives.
func (a *app) commands() []func() *cobra.Command {
	return []func() *cobra.Command{
		a.versionCmd,
		a.initCmd,
		a.validateCmd,
		a.pkiCmd,
		a.vipCmd,
		a.lbCmd,
		a.etcdCmd,
		a.tokenCmd,
		a.electCmd,
		a.renderCmd,
		a.joinCmd,
		a.agentCmd,
		a.statusCmd,
		a.maintenanceCmd,
		a.labCmd,
	}
}
