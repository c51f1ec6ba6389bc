//go:build race

package lb

// raceEnabled: the race detector multiplies memory use, so memory bounds
// are only logged.
const raceEnabled = true
