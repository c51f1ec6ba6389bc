// Package archtest holds no code: its tests guard the shape of the module.
// Leaf packages under internal/ do not import each other (the consumer
// declares a small interface and internal/agent or internal/cli wires the
// parts), the pure protocol packages import only the standard library,
// every package says in a doc comment what it owns, and only the command
// line (cmd/haplane, internal/cli) reads the environment or imports cobra.
package archtest
