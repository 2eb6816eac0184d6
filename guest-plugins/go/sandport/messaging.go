//go:build wasip1

package sandport

import "unsafe"

// ---- ABI version 2: messaging between connections -----------------------------------------------

//go:wasmimport sandport send
func hostSend(to int64, msgPtr unsafe.Pointer, msgLen int32) int32

//go:wasmimport sandport close
func hostClose(conn int64) int32

//go:wasmimport sandport connection_info
func hostConnectionInfo(conn int64, out unsafe.Pointer, outCap int32, lensOut unsafe.Pointer) int32

//go:wasmimport sandport join
func hostJoin(conn int64, roomPtr unsafe.Pointer, roomLen int32) int32

//go:wasmimport sandport leave
func hostLeave(conn int64, roomPtr unsafe.Pointer, roomLen int32) int32

//go:wasmimport sandport members
func hostMembers(roomPtr unsafe.Pointer, roomLen int32, out unsafe.Pointer, outCap int32, countOut unsafe.Pointer) int32

//go:wasmimport sandport publish
func hostPublish(sender int64, roomPtr unsafe.Pointer, roomLen int32, msgPtr unsafe.Pointer, msgLen int32, includeSender int32, countOut unsafe.Pointer) int32

// Send sends message to connection `to` (on any worker), framed as a reply; it never blocks.
// The error is UnknownConnection when no open connection has that id.
func Send(to uint64, message []byte) error {
	p, n := bytesPtr(message)
	return check(hostSend(int64(to), p, n))
}

// Close closes connection conn once what is queued for it is written.
func Close(conn uint64) error { return check(hostClose(int64(conn))) }

// ConnectionInfo returns an open connection's addresses, and false when it is not open.
func ConnectionInfo(conn uint64) (Conn, bool) {
	buf := make([]byte, 128)
	for {
		status := hostConnectionInfo(int64(conn), unsafe.Pointer(&buf[0]), int32(len(buf)), unsafe.Pointer(&outLen[0]))
		if status != 0 {
			return Conn{}, false
		}
		peer, local := int(outLen[0]), int(outLen[1])
		if peer+local <= len(buf) {
			return Conn{ID: conn, Peer: string(buf[:peer]), Local: string(buf[peer : peer+local])}, true
		}
		buf = make([]byte, peer+local)
	}
}

// Join makes connection conn a member of room (joining twice is not an error).
func Join(conn uint64, room string) error {
	p, n := strPtr(room)
	return check(hostJoin(int64(conn), p, n))
}

// Leave takes connection conn out of room; whether it was in it.
func Leave(conn uint64, room string) bool {
	p, n := strPtr(room)
	return hostLeave(int64(conn), p, n) == 0
}

// Members returns the ids of room's members, in ascending order.
func Members(room string) []uint64 {
	p, n := strPtr(room)
	ids := make([]uint64, 32)
	for {
		status := hostMembers(p, n, unsafe.Pointer(&ids[0]), int32(len(ids)*8), unsafe.Pointer(&outLen[0]))
		if status != 0 {
			return nil
		}
		count := int(outLen[0])
		if count <= len(ids) {
			return ids[:count]
		}
		ids = make([]uint64, count)
	}
}

// Publish sends message to every member of room, sender included only if includeSender;
// how many it was sent to.
func Publish(sender uint64, room string, message []byte, includeSender bool) int {
	rp, rn := strPtr(room)
	mp, mn := bytesPtr(message)
	include := int32(0)
	if includeSender {
		include = 1
	}
	if hostPublish(int64(sender), rp, rn, mp, mn, include, unsafe.Pointer(&outLen[0])) != 0 {
		return 0
	}
	return int(outLen[0])
}
