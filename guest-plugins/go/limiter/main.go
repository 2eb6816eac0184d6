//go:build wasip1

// limiter in Go: a rate limiter per client IP address, on the host's state store (core ABI
// version 2). Every client address may send `max` messages (default 5) per window of
// `window_ms` milliseconds (default 1000), counted across all its connections and all the
// host's workers; they are echoed back. A message over the limit gets the reply
// "rate limit exceeded" and its connection is closed. Settings:
// `--config limiter-go.max=2 --config limiter-go.window_ms=500`.
//
// Nothing lives in the instance: the count is the key `rate:<ip>` of the plugin's own bucket,
// incremented atomically by every message and expiring `window_ms` after the window's first
// message. So it works under every `--isolation`, the default `message` included.
package main

import (
	"errors"
	"net"
	"strconv"
	"time"

	"sandport.example/goplugins/sandport"
)

var (
	configured  bool
	maxMessages int64 = 5
	span              = time.Second
)

func init() {
	sandport.Handle(sandport.Handler{OnMessage: onMessage})
}

// configure reads the settings once per instance (they cannot change while the host runs).
func configure() error {
	if configured {
		return nil
	}
	if v, ok := sandport.ConfigGet("max"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return errors.New("limiter-go: `max` must be a whole number >= 0, got " + strconv.Quote(v))
		}
		maxMessages = n
	}
	if v, ok := sandport.ConfigGet("window_ms"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return errors.New("limiter-go: `window_ms` must be a whole number > 0, got " + strconv.Quote(v))
		}
		span = time.Duration(n) * time.Millisecond
	}
	configured = true
	return nil
}

// clientIP is the address connection conn comes from, without its port. Outside a server
// (`sandport call`) no connection is open and every message counts for "unknown".
func clientIP(conn uint64) string {
	info, ok := sandport.ConnectionInfo(conn)
	if !ok {
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(info.Peer); err == nil {
		return host
	}
	return info.Peer
}

func onMessage(conn uint64, message []byte) (sandport.Response, error) {
	if err := configure(); err != nil {
		return sandport.Response{}, err
	}
	ip := clientIP(conn)
	key := "rate:" + ip
	var state sandport.Bucket // the plugin's own bucket
	count, err := state.Increment(key, 1)
	if err != nil {
		return sandport.Response{}, errors.New("limiter-go: counting " + key + ": " + err.Error())
	}
	if count == 1 {
		// The window's first message starts it: the count goes when the window ends.
		if _, err := state.Expire(key, span); err != nil {
			return sandport.Response{}, errors.New("limiter-go: " + key + ": " + err.Error())
		}
	}
	if count > maxMessages {
		// Should the Expire after the first message have been lost (its call cut off), the
		// count would never go: give it a window from now.
		if ttl, exists, err := state.TTL(key); err == nil && exists && ttl < 0 {
			state.Expire(key, span)
		}
		sandport.Log(sandport.Info, ip+" (conn "+strconv.FormatUint(conn, 10)+"): more than "+
			strconv.FormatInt(maxMessages, 10)+" messages in "+span.String()+", closing")
		return sandport.ReplyAndClose([]byte("rate limit exceeded")), nil
	}
	sandport.Log(sandport.Debug, ip+" (conn "+strconv.FormatUint(conn, 10)+"): message "+
		strconv.FormatInt(count, 10)+" of "+strconv.FormatInt(maxMessages, 10)+" in this window")
	return sandport.Reply(message), nil
}

// main is never called: the host calls _initialize (which runs init above), then the hooks.
func main() {}
