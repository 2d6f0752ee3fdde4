// Command etcd is etcd's server, as its own module's main runs it: etcd's
// root module replaces its parts with directories of its tree, which a module
// cannot do from the proxy, so this main requires the server module alone.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
