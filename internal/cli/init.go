package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

func (a *app) initCmd() *cobra.Command {
	return &cobra.Command{Use: "init", Hidden: true, RunE: func(*cobra.Command, []string) error { return errors.New("init: being written") }}
}

func (a *app) validateCmd() *cobra.Command {
	return &cobra.Command{Use: "validate", Hidden: true, RunE: func(*cobra.Command, []string) error { return errors.New("validate: being written") }}
}
