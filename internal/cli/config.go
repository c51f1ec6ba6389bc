package cli

import (
	"errors"
	"fmt"

	"github.com/haplane/haplane/internal/config"
)

// loadConfig loads and validates the cluster file. Validation problems are
// printed one per line on stderr and turned into exit code 2.
func (a *app) loadConfig(path string) (*config.Cluster, error) {
	if err := requireFlag("config", path); err != nil {
		return nil, err
	}
	c, err := config.Load(path)
	if err == nil {
		return c, nil
	}
	var ve *config.Errors
	if errors.As(err, &ve) {
		for _, e := range ve.List {
			fmt.Fprintln(a.stderr, e.Error())
		}
		return nil, &ExitError{Code: ExitUsage, Err: fmt.Errorf("%s: %d problem(s) found", path, len(ve.List))}
	}
	return nil, &ExitError{Code: ExitUsage, Err: err}
}
