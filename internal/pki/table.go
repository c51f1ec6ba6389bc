package pki

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteCertTable prints statuses as the table of `haplane pki check`.
func WriteCertTable(w io.Writer, statuses []CertStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tRESIDUAL TIME\tCA\tSAN DRIFT\tCHAIN\tSTATUS")
	for _, s := range statuses {
		exp, res := "-", "-"
		if !s.Expires.IsZero() {
			exp = s.Expires.UTC().Format("Jan 02, 2006 15:04 MST")
			res = HumanDuration(s.Residual)
		}
		ca := s.CA
		if ca == "" {
			ca = "-"
		}
		drift := s.SANDrift
		if drift == "" {
			drift = DriftNotChecked
		}
		chain := "ok"
		switch {
		case s.Expires.IsZero() && !s.ChainOK:
			chain = "-" // missing, unreadable, or a key: nothing to chain
		case !s.ChainOK:
			chain = "BROKEN"
		}
		status := "ok"
		if !s.OK() {
			status = strings.Join(s.Problems, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, exp, res, ca, drift, chain, status)
	}
	return tw.Flush()
}

// HumanDuration is kubeadm's residual-time style: 364d, 9y, 23h.
func HumanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "expired"
	case d >= 2*365*24*time.Hour:
		return fmt.Sprintf("%dy", int(d.Hours()/24/365))
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
}
