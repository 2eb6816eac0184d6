//go:build wasip1

package sandport

import (
	"time"
	"unsafe"
)

// ---- ABI version 2: the host's state store ------------------------------------------------------

//go:wasmimport sandport kv_get
func hostKvGet(bPtr unsafe.Pointer, bLen int32, kPtr unsafe.Pointer, kLen int32, out unsafe.Pointer, outCap int32, lenOut unsafe.Pointer) int32

//go:wasmimport sandport kv_set
func hostKvSet(bPtr unsafe.Pointer, bLen int32, kPtr unsafe.Pointer, kLen int32, vPtr unsafe.Pointer, vLen int32, ttlMs int64) int32

//go:wasmimport sandport kv_delete
func hostKvDelete(bPtr unsafe.Pointer, bLen int32, kPtr unsafe.Pointer, kLen int32) int32

//go:wasmimport sandport kv_exists
func hostKvExists(bPtr unsafe.Pointer, bLen int32, kPtr unsafe.Pointer, kLen int32) int32

//go:wasmimport sandport kv_increment
func hostKvIncrement(bPtr unsafe.Pointer, bLen int32, kPtr unsafe.Pointer, kLen int32, delta int64, out unsafe.Pointer) int32

//go:wasmimport sandport kv_compare_and_swap
func hostKvCompareAndSwap(bPtr unsafe.Pointer, bLen int32, kPtr unsafe.Pointer, kLen int32, ePtr unsafe.Pointer, eLen int32, nPtr unsafe.Pointer, nLen int32) int32

//go:wasmimport sandport kv_expire
func hostKvExpire(bPtr unsafe.Pointer, bLen int32, kPtr unsafe.Pointer, kLen int32, ttlMs int64) int32

//go:wasmimport sandport kv_ttl
func hostKvTTL(bPtr unsafe.Pointer, bLen int32, kPtr unsafe.Pointer, kLen int32, out unsafe.Pointer) int32

//go:wasmimport sandport kv_list_keys
func hostKvListKeys(bPtr unsafe.Pointer, bLen int32, cPtr unsafe.Pointer, cLen int32, out unsafe.Pointer, outCap int32, lenOut unsafe.Pointer) int32

// Status is what a version-2 call answered when it is not plain success; it is an error.
type Status int32

const (
	// Absent: the key, the room membership or the connection was not there.
	Absent Status = 1
	// CasMismatch: compare-and-swap found another value; nothing was written.
	CasMismatch Status = 2
	// Unavailable: the store did not answer by the call's deadline (or failed). For a write,
	// whether it happened is unknown.
	Unavailable Status = 3
	// QuotaExceeded: a state quota of the operator's would be exceeded; nothing was written.
	QuotaExceeded Status = 4
	// NotAnInteger: Increment on a value that is not a decimal 64-bit integer.
	NotAnInteger Status = 5
	// Overflow: Increment past a 64-bit integer; nothing was written.
	Overflow Status = 6
	// InvalidArgument: a negative TTL, or a string that is not UTF-8.
	InvalidArgument Status = 7
	// NoSuchStore: no shared bucket has this name.
	NoSuchStore Status = 8
	// AccessDenied: the bucket is shared with other plugins only.
	AccessDenied Status = 9
	// UnknownConnection: no open connection has this id.
	UnknownConnection Status = 10
	// TooManyRooms: the connection is in --max-rooms-per-connection rooms already.
	TooManyRooms Status = 11
	// BadRoomName: a room name must be 1 to 256 bytes.
	BadRoomName Status = 12
)

var statusText = map[Status]string{
	Absent: "absent", CasMismatch: "compare-and-swap mismatch", Unavailable: "the state store is unavailable",
	QuotaExceeded: "state quota exceeded", NotAnInteger: "the value is not a decimal 64-bit integer",
	Overflow: "the increment overflows a 64-bit integer", InvalidArgument: "invalid argument",
	NoSuchStore: "no such store", AccessDenied: "access denied", UnknownConnection: "unknown connection",
	TooManyRooms: "too many rooms", BadRoomName: "bad room name",
}

func (s Status) Error() string {
	if t, ok := statusText[s]; ok {
		return "sandport: " + t
	}
	return "sandport: status " + itoa(int64(s))
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	var b [20]byte
	i := len(b)
	for n != 0 {
		d := n % 10
		if d < 0 {
			d = -d
		}
		i--
		b[i] = byte('0' + d)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// check turns a status into an error (nil for success).
func check(status int32) error {
	if status == 0 {
		return nil
	}
	return Status(status)
}

// Scratch out-parameters. Globals never move, and a Wasm instance runs one call at a time.
var (
	outLen [2]uint32
	outI64 int64
)

func strPtr(s string) (unsafe.Pointer, int32) {
	return unsafe.Pointer(unsafe.StringData(s)), int32(len(s))
}

func bytesPtr(b []byte) (unsafe.Pointer, int32) {
	return unsafe.Pointer(unsafe.SliceData(b)), int32(len(b))
}

// fetch runs a call that writes a variable-length result into a buffer, asking again with a
// buffer as long as the result when the first one was too small.
func fetch(call func(out unsafe.Pointer, outCap int32, lenOut unsafe.Pointer) int32) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		status := call(unsafe.Pointer(&buf[0]), int32(len(buf)), unsafe.Pointer(&outLen[0]))
		if status != 0 {
			return nil, Status(status)
		}
		n := int(outLen[0])
		if n <= len(buf) {
			return buf[:n], nil
		}
		// The value changed size between the two calls is possible: loop until it fits.
		buf = make([]byte, n)
	}
}

// Bucket is a namespace of the host's state: the plugin's own (the zero Bucket, or
// OpenBucket("default")) or one the operator shares with it (`--shared-state NAME=PLUGIN,...`).
// State outlives instances, connections and workers; every call is bounded by the hook's
// deadline and answers Unavailable rather than wait past it.
type Bucket struct{ name string }

// OpenBucket names a bucket; nothing is checked until it is used (NoSuchStore, AccessDenied).
func OpenBucket(name string) Bucket { return Bucket{name: name} }

// Get returns the key's value and whether it exists.
func (b Bucket) Get(key string) ([]byte, bool, error) {
	bp, bl := strPtr(b.name)
	kp, kl := strPtr(key)
	v, err := fetch(func(out unsafe.Pointer, outCap int32, lenOut unsafe.Pointer) int32 {
		return hostKvGet(bp, bl, kp, kl, out, outCap, lenOut)
	})
	if err == Absent {
		return nil, false, nil
	}
	return v, err == nil, err
}

// Set stores the value; it never expires.
func (b Bucket) Set(key string, value []byte) error { return b.SetWithTTL(key, value, 0) }

// SetWithTTL stores the value and makes it expire after ttl (rounded up to whole milliseconds;
// 0 never expires).
func (b Bucket) SetWithTTL(key string, value []byte, ttl time.Duration) error {
	bp, bl := strPtr(b.name)
	kp, kl := strPtr(key)
	vp, vl := bytesPtr(value)
	return check(hostKvSet(bp, bl, kp, kl, vp, vl, millis(ttl)))
}

func millis(d time.Duration) int64 {
	if d <= 0 {
		return int64(d) // 0: no TTL; negative: the host answers InvalidArgument
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// found maps OK to true and Absent to false.
func found(status int32) (bool, error) {
	switch Status(status) {
	case 0:
		return true, nil
	case Absent:
		return false, nil
	default:
		return false, Status(status)
	}
}

// Delete removes the key; whether it was there.
func (b Bucket) Delete(key string) (bool, error) {
	bp, bl := strPtr(b.name)
	kp, kl := strPtr(key)
	return found(hostKvDelete(bp, bl, kp, kl))
}

// Exists reports whether the key exists.
func (b Bucket) Exists(key string) (bool, error) {
	bp, bl := strPtr(b.name)
	kp, kl := strPtr(key)
	return found(hostKvExists(bp, bl, kp, kl))
}

// Increment adds delta to the key's decimal integer (a missing key counts as 0), keeping its
// TTL, and returns the new value, atomically across every worker.
func (b Bucket) Increment(key string, delta int64) (int64, error) {
	bp, bl := strPtr(b.name)
	kp, kl := strPtr(key)
	if err := check(hostKvIncrement(bp, bl, kp, kl, delta, unsafe.Pointer(&outI64))); err != nil {
		return 0, err
	}
	return outI64, nil
}

// CompareAndSwap writes value (with no TTL) only if the key holds expected (nil: only if the
// key is absent); whether it did.
func (b Bucket) CompareAndSwap(key string, expected, value []byte) (bool, error) {
	bp, bl := strPtr(b.name)
	kp, kl := strPtr(key)
	ep, el := bytesPtr(expected)
	if expected == nil {
		el = -1
	}
	vp, vl := bytesPtr(value)
	switch status := Status(hostKvCompareAndSwap(bp, bl, kp, kl, ep, el, vp, vl)); status {
	case 0:
		return true, nil
	case CasMismatch:
		return false, nil
	default:
		return false, status
	}
}

// Expire makes the key expire after ttl (0: never); whether the key exists.
func (b Bucket) Expire(key string, ttl time.Duration) (bool, error) {
	bp, bl := strPtr(b.name)
	kp, kl := strPtr(key)
	return found(hostKvExpire(bp, bl, kp, kl, millis(ttl)))
}

// TTL returns the key's time to live: exists is false for a missing key, and ttl is negative
// for a key that never expires.
func (b Bucket) TTL(key string) (ttl time.Duration, exists bool, err error) {
	bp, bl := strPtr(b.name)
	kp, kl := strPtr(key)
	exists, err = found(hostKvTTL(bp, bl, kp, kl, unsafe.Pointer(&outI64)))
	if !exists {
		return 0, false, err
	}
	if outI64 < 0 {
		return -1, true, nil
	}
	return time.Duration(outI64) * time.Millisecond, true, nil
}

// ListKeys returns up to 1000 keys after cursor ("" for the first page), in byte order, and the
// cursor of the next page ("" after the last one).
func (b Bucket) ListKeys(cursor string) (keys []string, next string, err error) {
	bp, bl := strPtr(b.name)
	cp, cl := strPtr(cursor)
	if cursor == "" {
		cl = -1
	}
	page, err := fetch(func(out unsafe.Pointer, outCap int32, lenOut unsafe.Pointer) int32 {
		return hostKvListKeys(bp, bl, cp, cl, out, outCap, lenOut)
	})
	if err != nil {
		return nil, "", err
	}
	word := func() uint32 {
		w := uint32(page[0]) | uint32(page[1])<<8 | uint32(page[2])<<16 | uint32(page[3])<<24
		page = page[4:]
		return w
	}
	count := word()
	keys = make([]string, 0, count)
	for i := uint32(0); i < count; i++ {
		n := word()
		keys = append(keys, string(page[:n]))
		page = page[n:]
	}
	if n := word(); n != 0xFFFFFFFF {
		next = string(page[:n])
	}
	return keys, next, nil
}
