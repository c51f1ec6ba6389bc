package etcdnode

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteReport prints rep as the table and verdict of `haplane etcd status`.
func WriteReport(w io.Writer, rep Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tENDPOINT\tHEALTHY\tREAD\tLEADER\tLEARNER\tTERM\tINDEX\tLAG\tDB/QUOTA\tERROR")
	for _, m := range rep.Members {
		read := "-"
		if m.Reachable {
			read = fmt.Sprintf("%.1fms", m.ReadLatency*1000)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%v\t%v\t%d\t%d\t%d\t%s/%s\t%s\n", m.Name, m.ID, m.Endpoint, m.Healthy, read,
			m.Leader, m.Learner, m.RaftTerm, m.RaftIndex, m.Lag, BytesHuman(m.DBSize), BytesHuman(m.Quota), m.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	serving := ""
	if rep.ServingVoters != rep.HealthyVoters {
		serving = fmt.Sprintf(" (%d serving, alarms aside)", rep.ServingVoters)
	}
	fmt.Fprintf(w, "verdict: %s (%d of %d voting members healthy%s, quorum %d, fault tolerance %d)\n",
		rep.Verdict, rep.HealthyVoters, rep.Voters, serving, rep.Quorum, rep.FaultTolerance)
	nospace := false
	for _, al := range rep.Alarms {
		fmt.Fprintf(w, "alarm: %s\n", al)
		nospace = nospace || strings.HasPrefix(al, "NOSPACE")
	}
	if nospace {
		fmt.Fprintln(w, "the database is over its quota and etcd refuses writes: haplane etcd defrag --compact --disarm")
	}
	return nil
}

// BytesHuman is n in binary units: 512B, 1.5KiB, 2.0GiB.
func BytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// WriteDefrag prints what `haplane etcd defrag` did.
func WriteDefrag(w io.Writer, res DefragResult) error {
	if res.CompactedRevision != 0 {
		fmt.Fprintf(w, "compacted to revision %d\n", res.CompactedRevision)
	}
	if len(res.Members) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tID\tENDPOINT\tLEADER\tBEFORE\tAFTER\tIN USE\tQUOTA\tTIME")
		for _, m := range res.Members {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.ID, m.Endpoint, m.Leader,
				BytesHuman(m.DBSizeBefore), BytesHuman(m.DBSizeAfter), BytesHuman(m.DBSizeInUseAfter), BytesHuman(m.Quota),
				time.Duration(m.Seconds*float64(time.Second)).Round(time.Millisecond))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(res.Pending) > 0 {
		fmt.Fprintf(w, "not defragmented: %s\n", strings.Join(res.Pending, ", "))
	}
	for _, al := range res.Disarmed {
		fmt.Fprintf(w, "disarmed: %s\n", al)
	}
	for _, al := range res.Alarms {
		fmt.Fprintf(w, "alarm still raised: %s\n", al)
	}
	return nil
}
