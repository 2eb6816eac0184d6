//go:build wasip1

// Package sandport implements the sandport core-module ABI (docs/core-abi.md in the sandport
// repository) for Go plugins built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o NAME.wasm ./NAME
//
// A plugin registers its hooks from an init function:
//
//	func init() {
//		sandport.Handle(sandport.Handler{OnMessage: onMessage})
//	}
//
// This package exports the ABI's functions (sandport_abi_version, sandport_alloc, sandport_free
// and the three hooks) and wraps the host's imports: Log and ConfigGet, and ABI version 2's
// state store (Bucket, in state.go) and messaging (Send, Join, Publish, ..., in messaging.go).
// It declares ABI version 2, so a plugin built with it needs a host that speaks version 2.
// `-buildmode=c-shared` makes the module a WASI reactor: the host calls `_initialize` once (the
// Go runtime starts and the init functions run; main is never called), then the hooks.
package sandport

import "unsafe"

// ---- The host's imports (module "sandport") ----------------------------------------------------

//go:wasmimport sandport log
func hostLog(level int32, ptr unsafe.Pointer, length int32)

//go:wasmimport sandport config_get
func hostConfigGet(keyPtr unsafe.Pointer, keyLen int32, outPtr unsafe.Pointer, outCap int32) int32

// Level is the severity of a log line.
type Level int32

const (
	Trace Level = 0
	Debug Level = 1
	Info  Level = 2
	Warn  Level = 3
	Error Level = 4
)

// Log writes a line to the host's log, which tags it with the plugin's name and the connection.
// Debug lines only show when the host runs with RUST_LOG=debug.
func Log(level Level, message string) {
	if message == "" {
		return
	}
	hostLog(int32(level), unsafe.Pointer(unsafe.StringData(message)), int32(len(message)))
}

// ConfigGet returns this plugin's setting `key`, given to the host as
// `--config PLUGIN.KEY=VALUE` (PLUGIN is the file name without .wasm), and whether it was given.
func ConfigGet(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	keyPtr, keyLen := unsafe.Pointer(unsafe.StringData(key)), int32(len(key))
	buf := make([]byte, 256)
	n := hostConfigGet(keyPtr, keyLen, unsafe.Pointer(&buf[0]), int32(len(buf)))
	if n < 0 {
		return "", false
	}
	if int(n) > len(buf) {
		// Longer than the first buffer: ask again with room for all of it.
		buf = make([]byte, n)
		n = hostConfigGet(keyPtr, keyLen, unsafe.Pointer(&buf[0]), int32(len(buf)))
	}
	return string(buf[:n]), true
}

// ---- What a plugin provides --------------------------------------------------------------------

// Response tells the host what to do after a hook: send Reply if Send is set (an empty Reply
// sends an empty message), then close the connection if Close is set.
type Response struct {
	Reply []byte
	Send  bool
	Close bool
}

// Reply is a Response that sends `b` and keeps the connection open.
func Reply(b []byte) Response { return Response{Reply: b, Send: true} }

// ReplyAndClose is a Response that sends `b`, then closes the connection.
func ReplyAndClose(b []byte) Response { return Response{Reply: b, Send: true, Close: true} }

// NoReply is a Response that sends nothing (in a chain, the chain ends there).
func NoReply() Response { return Response{} }

// Conn describes a client connection, as the host's on_connect hook sees it.
type Conn struct {
	ID    uint64 // unique for the life of the host process
	Peer  string // the client's address, such as 127.0.0.1:53412
	Local string // the host's address the client connected to
}

// Handler holds a plugin's hooks; nil hooks get the default behaviour (accept silently, no
// reply, nothing to do on disconnect). A non-nil error is the hook failing: the host logs it,
// throws the instance away and applies its --on-error policy.
type Handler struct {
	OnConnect    func(conn Conn) (Response, error)
	OnMessage    func(conn uint64, message []byte) (Response, error)
	OnDisconnect func(conn uint64)
}

var handler Handler

// Handle registers the plugin's hooks; call it from an init function.
func Handle(h Handler) { handler = h }

// ---- The ABI's plumbing ------------------------------------------------------------------------

const (
	flagReply uint32 = 1
	flagClose uint32 = 2
	flagError uint32 = 4
)

// result is what every hook returns a pointer to (flags, ptr, len). Go never moves globals.
var result [3]uint32

// empty is where 0-byte buffers point: the ABI wants a non-zero pointer, and the host frees
// only buffers longer than 0 bytes.
var empty [8]byte

// live keeps every buffer handed to the host alive (Go's garbage collector does not move
// objects, but it would free one nobody references), by address, until sandport_free.
var live = map[uint32][]byte{}

func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

// lend registers `b` as owned by the host and returns its address.
func lend(b []byte) uint32 {
	if len(b) == 0 {
		return addr(empty[:])
	}
	p := addr(b)
	live[p] = b
	return p
}

// take returns the buffer at `ptr` (from sandport_alloc) and forgets it: from now on the
// garbage collector frees it once the plugin drops it.
func take(ptr, size uint32) []byte {
	if size == 0 {
		return []byte{}
	}
	b, ok := live[ptr]
	if !ok || uint32(len(b)) < size {
		panic("sandport: the host passed a buffer that sandport_alloc did not return")
	}
	delete(live, ptr)
	return b[:size]
}

func respond(r Response, err error) uint32 {
	switch {
	case err != nil:
		msg := []byte(err.Error())
		result = [3]uint32{flagError, lend(msg), uint32(len(msg))}
	case r.Send:
		flags := flagReply
		if r.Close {
			flags |= flagClose
		}
		result = [3]uint32{flags, lend(r.Reply), uint32(len(r.Reply))}
	case r.Close:
		result = [3]uint32{flagClose, 0, 0}
	default:
		result = [3]uint32{0, 0, 0}
	}
	return uint32(uintptr(unsafe.Pointer(&result)))
}

//go:wasmexport sandport_abi_version
func abiVersion() int32 { return 2 }

//go:wasmexport sandport_alloc
func alloc(size uint32) uint32 {
	if size == 0 {
		return addr(empty[:])
	}
	return lend(make([]byte, size))
}

//go:wasmexport sandport_free
func free(ptr, size uint32) {
	delete(live, ptr)
}

//go:wasmexport sandport_on_connect
func onConnect(conn int64, peerPtr, peerLen, localPtr, localLen uint32) uint32 {
	peer := string(take(peerPtr, peerLen))
	local := string(take(localPtr, localLen))
	if handler.OnConnect == nil {
		return respond(NoReply(), nil)
	}
	return respond(handler.OnConnect(Conn{ID: uint64(conn), Peer: peer, Local: local}))
}

//go:wasmexport sandport_on_message
func onMessage(conn int64, msgPtr, msgLen uint32) uint32 {
	message := take(msgPtr, msgLen)
	if handler.OnMessage == nil {
		return respond(NoReply(), nil)
	}
	return respond(handler.OnMessage(uint64(conn), message))
}

//go:wasmexport sandport_on_disconnect
func onDisconnect(conn int64) {
	if handler.OnDisconnect != nil {
		handler.OnDisconnect(uint64(conn))
	}
}
