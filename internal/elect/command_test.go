package elect

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestCommandRun(t *testing.T) {
	errLost := errors.New("leadership lost")
	tests := []struct {
		name     string
		args     []string
		cancel   time.Duration // end the leadership after this (0: never)
		wantCode int
		wantErr  error
		wantOut  string
	}{
		{name: "exit code passes through", args: []string{"sh", "-c", "exit 3"}, wantCode: 3},
		{name: "token and identity in the environment", args: []string{"sh", "-c", `echo "$HAPLANE_FENCING_TOKEN $HAPLANE_ELECT_IDENTITY"`},
			wantOut: "42 cp1/7\n"},
		{name: "missing command", args: []string{"/nonexistent/haplane-elect-test"}, wantCode: 127},
		{name: "SIGTERM when leadership ends", args: []string{"sh", "-c", `trap 'exit 7' TERM; while :; do sleep 0.05; done`},
			cancel: 200 * time.Millisecond, wantCode: 7, wantErr: errLost},
		{name: "SIGKILL after the grace", args: []string{"sh", "-c", `trap '' TERM; while :; do sleep 0.05; done`},
			cancel: 200 * time.Millisecond, wantCode: 137, wantErr: errLost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if tt.cancel > 0 {
				time.AfterFunc(tt.cancel, func() { cancel(errLost) })
			}
			var out bytes.Buffer
			c := Command{Args: tt.args, Grace: 300 * time.Millisecond, Stdout: &out}
			start := time.Now()
			code, err := c.Run(ctx, Term{Token: 42, Identity: "cp1/7"})
			if code != tt.wantCode {
				t.Errorf("code %d, want %d (err %v)", code, tt.wantCode, err)
			}
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("err %v, want %v", err, tt.wantErr)
			case tt.wantErr == nil && tt.wantCode != 127 && err != nil:
				t.Errorf("err %v", err)
			case tt.wantCode == 127 && err == nil:
				t.Error("a command that cannot start returned no error")
			}
			if tt.wantOut != "" && out.String() != tt.wantOut {
				t.Errorf("output %q, want %q", out.String(), tt.wantOut)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestCommandMargin(t *testing.T) {
	tests := []struct {
		ttl, grace time.Duration
		want       time.Duration
		wantErr    bool
	}{
		{ttl: 10 * time.Second, grace: 3 * time.Second, want: 3500 * time.Millisecond},
		{ttl: time.Second, grace: 0, wantErr: true},
		{ttl: 4 * time.Second, grace: 2 * time.Second, wantErr: true},
	}
	for _, tt := range tests {
		got, err := CommandMargin(tt.ttl, tt.grace)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("CommandMargin(%v, %v) = %v, %v", tt.ttl, tt.grace, got, err)
		}
	}
}
