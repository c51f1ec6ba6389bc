// Package elect holds the end-to-end test of `haplane elect`: candidate
// processes on one lock in a real etcd, handing over 50 times while a
// file-lock probe proves two commands never ran at once.
package elect
