package lab

import "github.com/haplane/haplane/internal/netns"

// The lab's hosts are network namespaces (internal/netns); these names keep
// the lab's API whole for its callers.
type (
	Net  = netns.Net
	Host = netns.Host
)

// LabEnv marks the processes the lab runs in its namespaces.
const LabEnv = netns.LabEnv

var (
	NewNet      = netns.NewNet
	Sweep       = netns.Sweep
	RequireRoot = netns.RequireRoot
)
