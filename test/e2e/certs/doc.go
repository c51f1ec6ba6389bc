// Package certs holds the end-to-end test of certificate renewal by the
// agent, driven through the haplane binary: a cluster file with
// certificates that live two minutes, `haplane pki generate`, and an agent
// that renews them.
package certs
