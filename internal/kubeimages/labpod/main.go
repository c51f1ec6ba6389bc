// Command labpod is the one program in the kubelet lab's pause and workload
// images. With no arguments it is a pod sandbox's pause process: PID 1 of
// the pod, it reaps the zombies of the pod's other processes and exits on
// SIGTERM or SIGINT. With `serve ADDR` it is the workload: an HTTP server
// answering with the pod's host name, so a test can see which pod answered.
// With `watch SERVER SERVERNAME NAMESPACE LABEL` it is an in-cluster API
// client (watch.go): it follows the ConfigMaps carrying LABEL with the
// pod's service-account token and prints when each event arrived, so the
// lab can tell how late a watch saw each write through a fault.
// It is built static (CGO_ENABLED=0) so an image needs no other file.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "serve" {
		serve(os.Args[2])
		return
	}
	if len(os.Args) == 2 && os.Args[1] == "-v" {
		// As the pause image's own program: kubeadm upgrade's health check
		// runs a Job of the pause image with -v and wants it to succeed.
		fmt.Println("labpod (pause)")
		return
	}
	if len(os.Args) == 6 && os.Args[1] == "watch" {
		watch(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
		return
	}
	if len(os.Args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: labpod [serve ADDR | watch SERVER SERVERNAME NAMESPACE LABEL]")
		os.Exit(2)
	}
	pause()
}

// pause waits for a stop signal, reaping children meanwhile (the pause
// process is PID 1 of the pod's PID namespace when kubelet shares it).
func pause() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve(addr string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, host)
	})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}()
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "labpod:", err)
		os.Exit(1)
	}
}
