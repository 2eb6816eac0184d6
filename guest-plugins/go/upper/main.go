//go:build wasip1

// upper in Go: replies every message upper-cased (Unicode, as bytes.ToUpper does it), prefixed
// by the `prefix` setting if it is given (`--config upper-go.prefix=">> "`), and logs a debug
// line "conn N: upper-cased M bytes".
//
// A plain core WebAssembly module (GOOS=wasip1, -buildmode=c-shared) implementing the sandport
// core-module ABI through the small ../sandport package.
package main

import (
	"bytes"
	"strconv"

	"sandport.example/goplugins/sandport"
)

func init() {
	sandport.Handle(sandport.Handler{OnMessage: onMessage})
}

func onMessage(conn uint64, message []byte) (sandport.Response, error) {
	// Settings are read on every call: an instance may be fresh for each message.
	prefix, _ := sandport.ConfigGet("prefix")
	reply := append([]byte(prefix), bytes.ToUpper(message)...)
	sandport.Log(sandport.Debug, "conn "+strconv.FormatUint(conn, 10)+": upper-cased "+
		strconv.Itoa(len(message))+" bytes")
	return sandport.Reply(reply), nil
}

// main is never called: the host calls _initialize (which runs init above), then the hooks.
func main() {}
