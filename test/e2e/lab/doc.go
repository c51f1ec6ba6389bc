// Package lab holds the end-to-end test of `haplane lab`: a whole control
// plane (etcd, stub apiservers, agents with VIP and load balancer) in
// network namespaces, driven through the haplane binary as a user would.
package lab
