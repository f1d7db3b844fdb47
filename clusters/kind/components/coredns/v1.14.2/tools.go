//go:build tools

// Package coredns only pins the command built from github.com/coredns/coredns, so that
// `go mod tidy` records every module it needs in go.sum.
package coredns

import _ "github.com/coredns/coredns"
