//go:build !nodeonly

package main

import (
	"os"

	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

// The control plane's servers: left out of the node-only (arm64) build.
func init() {
	programs["kube-apiserver"] = func() { os.Exit(cli.Run(apiserver.NewAPIServerCommand())) }
	programs["kube-controller-manager"] = func() { os.Exit(cli.Run(controllermanager.NewControllerManagerCommand())) }
	programs["kube-scheduler"] = func() { os.Exit(cli.Run(scheduler.NewSchedulerCommand())) }
}
