// pause holds a pod's namespaces open: the sandbox ("pause") container of every pod on the
// local stack's real nodes. It blocks until SIGINT or SIGTERM and, as PID 1 of the pod's
// PID namespace when that is shared, reaps the zombies it inherits. Built static, so the
// image is this one file.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
