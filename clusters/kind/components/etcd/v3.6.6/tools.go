//go:build tools

// Package etcd only pins the command built from go.etcd.io/etcd/server/v3, so that
// `go mod tidy` records every module it needs in go.sum.
package etcd

import _ "go.etcd.io/etcd/server/v3"
