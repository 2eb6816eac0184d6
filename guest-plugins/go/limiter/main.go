//go:build wasip1

// limiter in Go: a per-connection rate limiter. Each connection may send `max` messages
// (default 5) per window of `window_ms` milliseconds (default 1000); they are echoed back. The
// next message in the same window gets the reply "rate limit exceeded" and the connection is
// closed. Settings: `--config limiter-go.max=2 --config limiter-go.window_ms=500`.
//
// The counts live in the instance's memory, keyed by the connection id, so the host must keep
// the instance between messages: run it with `--isolation connection` (an instance per
// connection) or `--isolation worker` (one per worker thread, shared by its connections: the map
// holds one entry per open connection, forgotten on disconnect). Under `--isolation message`
// every message sees a fresh instance and nothing is ever limited.
package main

import (
	"errors"
	"strconv"
	"time"

	"sandport.example/goplugins/sandport"
)

// window is one connection's current window: when it started and how many messages it saw.
type window struct {
	start time.Time
	count int
}

var (
	windows = map[uint64]*window{}

	configured  bool
	maxMessages = 5
	span        = time.Second
)

func init() {
	sandport.Handle(sandport.Handler{
		OnMessage:    onMessage,
		OnDisconnect: onDisconnect,
	})
}

// configure reads the settings once per instance (they cannot change while the host runs).
func configure() error {
	if configured {
		return nil
	}
	if v, ok := sandport.ConfigGet("max"); ok {
		n, err := strconv.Atoi(v)
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

func onMessage(conn uint64, message []byte) (sandport.Response, error) {
	if err := configure(); err != nil {
		return sandport.Response{}, err
	}
	now := time.Now()
	w := windows[conn]
	if w == nil || now.Sub(w.start) >= span {
		w = &window{start: now}
		windows[conn] = w
	}
	w.count++
	if w.count > maxMessages {
		sandport.Log(sandport.Info, "conn "+strconv.FormatUint(conn, 10)+": more than "+
			strconv.Itoa(maxMessages)+" messages in "+span.String()+", closing")
		return sandport.ReplyAndClose([]byte("rate limit exceeded")), nil
	}
	sandport.Log(sandport.Debug, "conn "+strconv.FormatUint(conn, 10)+": message "+
		strconv.Itoa(w.count)+" of "+strconv.Itoa(maxMessages)+" in this window")
	return sandport.Reply(message), nil
}

func onDisconnect(conn uint64) {
	delete(windows, conn)
	sandport.Log(sandport.Debug, "conn "+strconv.FormatUint(conn, 10)+": forgotten, "+
		strconv.Itoa(len(windows))+" connections tracked")
}

// main is never called: the host calls _initialize (which runs init above), then the hooks.
func main() {}
