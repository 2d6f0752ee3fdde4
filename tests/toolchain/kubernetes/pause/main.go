// Command pause is a pod sandbox's first process: it sleeps until SIGTERM or
// SIGINT, then exits 0. Static and without dependencies, for the pause image.
// Children it inherits (a pod sharing its process namespace) are reaped by the
// kernel: SIGCHLD ignored.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Ignore(syscall.SIGCHLD)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
