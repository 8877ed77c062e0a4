// Package cidcache is the Go client of cidcache, a shared-memory, cross-process cache for
// content-addressed data (IPFS CIDs) and Arrow datasets. It wraps the C ABI (libcidcache, header
// include/cidcache.h) with cgo.
//
// A hit (Client.Get on a sealed object) is served from shared memory without a system call or a
// lock: the returned Object's Data is a []byte view directly over the shared mapping, valid until
// Object.Release. Misses, writes and control calls are requests to the coordinator, cidcached.
//
// Linking: the package finds libcidcache with pkg-config (package cidcache). Install the
// library (make install, or scripts/install.sh --prefix DIR, which writes
// DIR/lib/pkgconfig/cidcache.pc); with a prefix pkg-config does not search, point it there:
//
//	PKG_CONFIG_PATH=DIR/lib/pkgconfig go test ./...
//
// Errors are *Error values carrying the stable Status code; compare with errors.Is against the
// Err* sentinels (errors.Is(err, cidcache.ErrNotFound)).
package cidcache

/*
#cgo pkg-config: cidcache
#include <stdlib.h>
#include "cidcache.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/arrio"
	"github.com/apache/arrow-go/v18/arrow/cdata"
)

// cstatus is what cgo makes of a C function's cidcache_status result (the enum's underlying
// type).
type cstatus = uint32

// Status is a stable status code of the C API (the values of cidcache_status).
type Status int

// Status codes; equal to the C enum cidcache_status and to the Rust cidcache::Code.
const (
	StatusOK               Status = C.CIDCACHE_OK
	StatusNotFound         Status = C.CIDCACHE_NOT_FOUND
	StatusAlreadyExists    Status = C.CIDCACHE_ALREADY_EXISTS
	StatusStoreFull        Status = C.CIDCACHE_STORE_FULL
	StatusIndexFull        Status = C.CIDCACHE_INDEX_FULL
	StatusTimeout          Status = C.CIDCACHE_TIMEOUT
	StatusInvalidKey       Status = C.CIDCACHE_INVALID_KEY
	StatusInvalidArgument  Status = C.CIDCACHE_INVALID_ARGUMENT
	StatusProtocol         Status = C.CIDCACHE_PROTOCOL
	StatusDisconnected     Status = C.CIDCACHE_DISCONNECTED
	StatusPinsExhausted    Status = C.CIDCACHE_PINS_EXHAUSTED
	StatusNotSealed        Status = C.CIDCACHE_NOT_SEALED
	StatusPermissionDenied Status = C.CIDCACHE_PERMISSION_DENIED
	StatusIO               Status = C.CIDCACHE_IO
	StatusIncompatible     Status = C.CIDCACHE_INCOMPATIBLE
	StatusCIDMismatch      Status = C.CIDCACHE_CID_MISMATCH
	StatusAlreadyRunning   Status = C.CIDCACHE_ALREADY_RUNNING
	StatusArrow            Status = C.CIDCACHE_ARROW
	StatusInternal         Status = C.CIDCACHE_INTERNAL
	StatusCorrupt          Status = C.CIDCACHE_CORRUPT
	StatusBusy             Status = C.CIDCACHE_BUSY
	StatusNotRunning       Status = C.CIDCACHE_NOT_RUNNING
	StatusNotArrow         Status = C.CIDCACHE_NOT_ARROW
)

// String is the C name of the status, e.g. "CIDCACHE_NOT_FOUND".
func (s Status) String() string { return C.GoString(C.cidcache_status_name(C.int32_t(s))) }

// Error is a failed call: its status and the library's message.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("cidcache: %s: %s", e.Status, e.Message) }

// Is reports whether target is an *Error with the same Status (so errors.Is works with the
// sentinels below).
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Status == e.Status
}

// Sentinels for errors.Is, one per status (errors.Is(err, cidcache.ErrTimeout)).
var (
	ErrNotFound         = &Error{Status: StatusNotFound}
	ErrAlreadyExists    = &Error{Status: StatusAlreadyExists}
	ErrStoreFull        = &Error{Status: StatusStoreFull}
	ErrIndexFull        = &Error{Status: StatusIndexFull}
	ErrTimeout          = &Error{Status: StatusTimeout}
	ErrInvalidKey       = &Error{Status: StatusInvalidKey}
	ErrInvalidArgument  = &Error{Status: StatusInvalidArgument}
	ErrProtocol         = &Error{Status: StatusProtocol}
	ErrDisconnected     = &Error{Status: StatusDisconnected}
	ErrPinsExhausted    = &Error{Status: StatusPinsExhausted}
	ErrNotSealed        = &Error{Status: StatusNotSealed}
	ErrPermissionDenied = &Error{Status: StatusPermissionDenied}
	ErrIO               = &Error{Status: StatusIO}
	ErrIncompatible     = &Error{Status: StatusIncompatible}
	ErrCIDMismatch      = &Error{Status: StatusCIDMismatch}
	ErrAlreadyRunning   = &Error{Status: StatusAlreadyRunning}
	ErrArrow            = &Error{Status: StatusArrow}
	ErrInternal         = &Error{Status: StatusInternal}
	ErrCorrupt          = &Error{Status: StatusCorrupt}
	ErrBusy             = &Error{Status: StatusBusy}
	ErrNotRunning       = &Error{Status: StatusNotRunning}
	ErrNotArrow         = &Error{Status: StatusNotArrow}
)

// sentinels lists every sentinel, in status order (tests check that none is missing).
var sentinels = []*Error{ErrNotFound, ErrAlreadyExists, ErrStoreFull, ErrIndexFull, ErrTimeout,
	ErrInvalidKey, ErrInvalidArgument, ErrProtocol, ErrDisconnected, ErrPinsExhausted, ErrNotSealed,
	ErrPermissionDenied, ErrIO, ErrIncompatible, ErrCIDMismatch, ErrAlreadyRunning, ErrArrow,
	ErrInternal, ErrCorrupt, ErrBusy, ErrNotRunning, ErrNotArrow}

// lastError builds the error of status s from this OS thread's last-error message. The message is
// thread-local in C and a goroutine may move between OS threads between two cgo calls, so the
// failing call and this one must run with the OS thread locked (see locked).
func lastError(s cstatus) error {
	return &Error{Status: Status(s), Message: C.GoString(C.cidcache_last_error())}
}

// check turns a status into an error (see lastError about threads).
func check(s cstatus) error {
	if s == C.CIDCACHE_OK {
		return nil
	}
	return lastError(s)
}

// locked runs f (one cgo call plus reading its error) on one OS thread.
func locked(f func() cstatus) error {
	runtime.LockOSThread()
	s := f()
	err := check(s)
	runtime.UnlockOSThread()
	return err
}

func keyPtr(key []byte) (*C.uint8_t, C.size_t) {
	if len(key) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(key))), C.size_t(len(key))
}

func millis(d time.Duration) C.int64_t {
	if d < 0 {
		return -1
	}
	return C.int64_t(d / time.Millisecond)
}

// Client is a connection to a store. Its methods may be called from several goroutines at once;
// Close must not run concurrently with them.
type Client struct {
	c *C.cidcache_client
}

// ConnectSocket connects to the coordinator listening on the Unix socket path.
func ConnectSocket(path string) (*Client, error) { return connect(path, "", false) }

// ConnectStore connects to the store named store at its default socket path; "" means
// $CIDCACHE_STORE when it is set (as for cidcached and the cidcache CLI), else "default". No
// coordinator serving the store is an error matching ErrNotRunning.
func ConnectStore(store string) (*Client, error) { return connect("", store, false) }

// ConnectReadOnly connects to the socket path in the read-only role.
func ConnectReadOnly(path string) (*Client, error) { return connect(path, "", true) }

// ConnectStoreReadOnly connects to the store named store ("" as for ConnectStore) in the
// read-only role: data is mapped read-only and writes are refused (ErrPermissionDenied); hits
// work as for writers.
func ConnectStoreReadOnly(store string) (*Client, error) { return connect("", store, true) }

func connect(path, store string, readOnly bool) (*Client, error) {
	var cpath, cstore *C.char
	if path != "" {
		cpath = C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
	}
	if store != "" {
		cstore = C.CString(store)
		defer C.free(unsafe.Pointer(cstore))
	}
	var flags C.uint32_t
	if readOnly {
		flags = C.CIDCACHE_CONNECT_READ_ONLY
	}
	var h *C.cidcache_client
	if err := locked(func() cstatus { return C.cidcache_connect(cpath, cstore, flags, &h) }); err != nil {
		return nil, err
	}
	return &Client{c: h}, nil
}

// Close disconnects. Objects obtained from the client stay valid until released.
func (c *Client) Close() error {
	if c.c != nil {
		C.cidcache_disconnect(c.c)
		c.c = nil
	}
	return nil
}

// Object is a pinned, sealed object. Data and Metadata are read-only views over the shared
// mapping (no copy), valid until Release; do not write to them and do not keep them (or slices
// of them) after Release: copy what must outlive it.
type Object struct {
	h *C.cidcache_object
	// Data is the object's bytes, in shared memory.
	Data []byte
	// Metadata is the object's metadata bytes, in shared memory.
	Metadata []byte
	flags    uint32
}

// IsArrow reports whether the object was stored as Arrow IPC.
func (o *Object) IsArrow() bool { return o.flags&C.CIDCACHE_OBJECT_ARROW != 0 }

// Release unpins the object; Data and Metadata become invalid. Calling it again does nothing.
func (o *Object) Release() {
	if o.h != nil {
		C.cidcache_release(o.h)
		o.h = nil
		o.Data = nil
		o.Metadata = nil
	}
}

func newObject(h *C.cidcache_object, v *C.cidcache_view) *Object {
	o := &Object{h: h, flags: uint32(v.flags)}
	o.Data = unsafe.Slice((*byte)(unsafe.Pointer(v.data)), int(v.data_len))
	o.Metadata = unsafe.Slice((*byte)(unsafe.Pointer(v.metadata)), int(v.metadata_len))
	return o
}

// Get returns the object stored under key if it is sealed now, without waiting. A hit makes no
// system call and takes no lock. A missing key is an error matching ErrNotFound.
func (c *Client) Get(key []byte) (*Object, error) {
	var h *C.cidcache_object
	var v C.cidcache_view
	kp, kl := keyPtr(key)
	// The OS thread is locked so that an error's thread-local message is this call's.
	runtime.LockOSThread()
	s := C.cidcache_get(c.c, kp, kl, &h, &v)
	if s != C.CIDCACHE_OK {
		err := lastError(s)
		runtime.UnlockOSThread()
		return nil, err
	}
	runtime.UnlockOSThread()
	return newObject(h, &v), nil
}

// GetTimeout waits up to timeout (negative: without limit) for key to be sealed; when it expires
// first the error matches ErrTimeout (with a timeout of 0, ErrNotFound). The goroutine's OS thread
// blocks in the call; prefer GetContext in servers.
func (c *Client) GetTimeout(key []byte, timeout time.Duration) (*Object, error) {
	var h *C.cidcache_object
	var v C.cidcache_view
	err := locked(func() cstatus {
		kp, kl := keyPtr(key)
		return C.cidcache_get_timeout(c.c, kp, kl, millis(timeout), &h, &v)
	})
	if err != nil {
		return nil, err
	}
	return newObject(h, &v), nil
}

// GetContext gets key, waiting up to timeout (negative: without limit) for it to be sealed, or
// until ctx is done. It does not hold an OS thread while waiting: the wait is the library's
// pollable fd, parked in Go's netpoller.
func (c *Client) GetContext(ctx context.Context, key []byte, timeout time.Duration) (*Object, error) {
	var op *C.cidcache_get_op
	if err := locked(func() cstatus {
		kp, kl := keyPtr(key)
		return C.cidcache_get_async(c.c, kp, kl, millis(timeout), &op)
	}); err != nil {
		return nil, err
	}
	defer C.cidcache_get_op_free(op)
	if !bool(C.cidcache_get_op_ready(op)) {
		if err := waitReadable(ctx, int(C.cidcache_get_op_fd(op)), func() bool {
			return bool(C.cidcache_get_op_ready(op))
		}); err != nil {
			return nil, err
		}
	}
	var h *C.cidcache_object
	var v C.cidcache_view
	if err := locked(func() cstatus { return C.cidcache_get_op_result(op, &h, &v) }); err != nil {
		return nil, err
	}
	return newObject(h, &v), nil
}

// waitReadable parks the goroutine in the netpoller until fd is readable and ready() holds, or
// ctx is done. The fd is duplicated (the operation keeps ownership of the original).
func waitReadable(ctx context.Context, fd int, ready func() bool) error {
	dup, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return &Error{Status: StatusIO, Message: "dup of the get fd: " + errno.Error()}
	}
	f := os.NewFile(dup, "cidcache-get")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return &Error{Status: StatusIO, Message: err.Error()}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = f.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(func(uintptr) bool { return ready() })
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Only ctx sets deadlines here; its own timer may fire a moment after the fd's.
			<-ctx.Done()
			return ctx.Err()
		}
		return &Error{Status: StatusIO, Message: err.Error()}
	}
	return nil
}

// Put stores data under key. An existing key matches ErrAlreadyExists.
func (c *Client) Put(key, data []byte) error {
	return c.PutWithOptions(key, data, nil, PutOptions{})
}

// PutOptions are the flags of PutWithOptions.
type PutOptions struct {
	// Ephemeral: drop instead of demoting to a lower tier when evicted.
	Ephemeral bool
	// VerifyCID: have the coordinator check that data hashes to the key (a sha2-256 CID).
	VerifyCID bool
	// IPFS: also add the object to the store's IPFS node (cidcached --ipfs-api), pinned, under
	// the key, which must be the CID the node computes for data; the put succeeds only once
	// the node holds it.
	IPFS bool
	// Durable: return only once the object is in a synced file of the warm tier.
	Durable bool
}

// PutWithOptions stores data and metadata under key.
func (c *Client) PutWithOptions(key, data, metadata []byte, opts PutOptions) error {
	var flags C.uint32_t
	if opts.Ephemeral {
		flags |= C.CIDCACHE_PUT_EPHEMERAL
	}
	if opts.VerifyCID {
		flags |= C.CIDCACHE_PUT_VERIFY_CID
	}
	if opts.IPFS {
		flags |= C.CIDCACHE_PUT_IPFS
	}
	if opts.Durable {
		flags |= C.CIDCACHE_PUT_DURABLE
	}
	return locked(func() cstatus {
		kp, kl := keyPtr(key)
		dp, dl := keyPtr(data)
		mp, ml := keyPtr(metadata)
		return C.cidcache_put_ex(c.c, kp, kl, dp, dl, mp, ml, flags)
	})
}

// PutContext stores data and metadata under key like PutWithOptions, without holding an OS
// thread while the coordinator answers: the wait is the library's pollable fd, parked in Go's
// netpoller (large objects are written into shared memory on the library's thread). If ctx is
// done first it returns ctx.Err(); the put may still take effect. The buffers are copied by the
// call.
func (c *Client) PutContext(ctx context.Context, key, data, metadata []byte, opts PutOptions) error {
	var flags C.uint32_t
	if opts.Ephemeral {
		flags |= C.CIDCACHE_PUT_EPHEMERAL
	}
	if opts.VerifyCID {
		flags |= C.CIDCACHE_PUT_VERIFY_CID
	}
	var op *C.cidcache_put_op
	if err := locked(func() cstatus {
		kp, kl := keyPtr(key)
		dp, dl := keyPtr(data)
		mp, ml := keyPtr(metadata)
		return C.cidcache_put_async(c.c, kp, kl, dp, dl, mp, ml, flags, &op)
	}); err != nil {
		return err
	}
	defer C.cidcache_put_op_free(op)
	if !bool(C.cidcache_put_op_ready(op)) {
		if err := waitReadable(ctx, int(C.cidcache_put_op_fd(op)), func() bool {
			return bool(C.cidcache_put_op_ready(op))
		}); err != nil {
			return err
		}
	}
	return locked(func() cstatus { return C.cidcache_put_op_result(op) })
}

// PutContent stores data under its CIDv1 (raw codec, sha2-256) and returns the binary CID.
func (c *Client) PutContent(data []byte) ([]byte, error) {
	var buf [C.CIDCACHE_CID_V1_RAW_LEN]byte
	var n C.size_t
	err := locked(func() cstatus {
		dp, dl := keyPtr(data)
		return C.cidcache_put_content(c.c, dp, dl, (*C.uint8_t)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
	})
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), buf[:n]...), nil
}

// GetMany gets many keys: hits locally, the misses in one round trip waiting up to timeout
// (negative: without limit). For each key, objs[i] is the object, or nil with errs[i] set (errors
// matching ErrNotFound for keys still missing). Release every non-nil object.
func (c *Client) GetMany(keys [][]byte, timeout time.Duration) (objs []*Object, errs []error) {
	n := len(keys)
	objs = make([]*Object, n)
	errs = make([]error, n)
	if n == 0 {
		return
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	ks := make([]C.cidcache_key, n)
	for i, k := range keys {
		if len(k) > 0 {
			pin.Pin(unsafe.SliceData(k))
			ks[i] = C.cidcache_key{ptr: (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(k))), len: C.size_t(len(k))}
		}
	}
	hs := make([]*C.cidcache_object, n)
	vs := make([]C.cidcache_view, n)
	st := make([]cstatus, n)
	// Locked: the per-item messages are the calling OS thread's.
	runtime.LockOSThread()
	C.cidcache_get_many(c.c, &ks[0], C.size_t(n), millis(timeout), &hs[0], &vs[0], &st[0])
	for i := range keys {
		if st[i] == C.CIDCACHE_OK {
			objs[i] = newObject(hs[i], &vs[i])
		} else {
			errs[i] = itemError(st[i], i)
		}
	}
	runtime.UnlockOSThread()
	return
}

// Item is one object for PutMany.
type Item struct {
	Key  []byte
	Data []byte
}

// PutMany stores many objects (small ones batched into few round trips). It returns one error per
// item, nil for the ones stored: partial success is normal.
func (c *Client) PutMany(items []Item) []error {
	n := len(items)
	errs := make([]error, n)
	if n == 0 {
		return errs
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	its := make([]C.cidcache_put_item, n)
	for i, it := range items {
		kp, kl := keyPtr(it.Key)
		dp, dl := keyPtr(it.Data)
		if kp != nil {
			pin.Pin(kp)
		}
		if dp != nil {
			pin.Pin(dp)
		}
		its[i] = C.cidcache_put_item{key: kp, key_len: kl, data: dp, data_len: dl}
	}
	st := make([]cstatus, n)
	runtime.LockOSThread()
	C.cidcache_put_many(c.c, &its[0], C.size_t(n), &st[0])
	for i := range items {
		if st[i] != C.CIDCACHE_OK {
			errs[i] = itemError(st[i], i)
		}
	}
	runtime.UnlockOSThread()
	return errs
}

// itemError is the error of item i of the batch call just made on this (locked) OS thread, with
// the library's message for that item.
func itemError(s cstatus, i int) error {
	msg := C.GoString(C.cidcache_item_error(C.size_t(i)))
	if msg == "" {
		msg = fmt.Sprintf("item %d: %s", i, Status(s))
	}
	return &Error{Status: Status(s), Message: msg}
}

// Contains reports whether a sealed object is stored under key (in any tier).
func (c *Client) Contains(key []byte) (bool, error) {
	var b C.bool
	err := locked(func() cstatus {
		kp, kl := keyPtr(key)
		return C.cidcache_contains(c.c, kp, kl, &b)
	})
	return bool(b), err
}

// Delete deletes key; readers holding it keep reading it until they release it.
func (c *Client) Delete(key []byte) error {
	return locked(func() cstatus {
		kp, kl := keyPtr(key)
		return C.cidcache_delete(c.c, kp, kl)
	})
}

// Pinned is the number of objects this client pins now.
func (c *Client) Pinned() (int, error) {
	var n C.size_t
	err := locked(func() cstatus { return C.cidcache_pinned(c.c, &n) })
	return int(n), err
}

// ListEntry describes one stored object.
type ListEntry struct {
	Key         []byte
	DataLen     uint64
	MetadataLen uint64
	Arrow       bool
}

// List lists the sealed objects of the hot tier.
func (c *Client) List() ([]ListEntry, error) {
	var e *C.cidcache_list_entry
	var n C.size_t
	if err := locked(func() cstatus { return C.cidcache_list(c.c, &e, &n) }); err != nil {
		return nil, err
	}
	defer C.cidcache_list_free(e, n)
	out := make([]ListEntry, 0, int(n))
	for _, x := range unsafe.Slice(e, int(n)) {
		key := C.GoBytes(unsafe.Pointer(&x.key[0]), C.int(x.key_len))
		out = append(out, ListEntry{Key: key, DataLen: uint64(x.data_len), MetadataLen: uint64(x.metadata_len),
			Arrow: x.flags&C.CIDCACHE_OBJECT_ARROW != 0})
	}
	return out, nil
}

// Stats returns the store's named counters.
func (c *Client) Stats() (map[string]uint64, error) {
	var s *C.cidcache_stat
	var n C.size_t
	if err := locked(func() cstatus { return C.cidcache_stats(c.c, &s, &n) }); err != nil {
		return nil, err
	}
	defer C.cidcache_stats_free(s, n)
	out := make(map[string]uint64, int(n))
	for _, x := range unsafe.Slice(s, int(n)) {
		out[C.GoString(x.name)] = uint64(x.value)
	}
	return out, nil
}

// ArrowReader reads the records of an Arrow object: an array.RecordReader (Next, RecordBatch,
// Err, Schema, Release) that is also an arrio.Reader (Read returns io.EOF at the end). Release it
// when done: it holds the object's pin.
type ArrowReader interface {
	array.RecordReader
	arrio.Reader
}

// GetArrow reads the Arrow object key, zero-copy: every buffer of the records the reader yields
// points into the shared mapping. The object stays pinned until the reader and every record
// obtained from it are released (call Release on the reader when done). A missing key matches
// ErrNotFound; an object not stored as Arrow, ErrNotArrow.
func (c *Client) GetArrow(key []byte) (ArrowReader, error) {
	stream := cdata.CArrowArrayStream{}
	err := locked(func() cstatus {
		kp, kl := keyPtr(key)
		return C.cidcache_get_arrow(c.c, kp, kl, (*C.struct_ArrowArrayStream)(unsafe.Pointer(&stream)))
	})
	if err != nil {
		return nil, err
	}
	return importStream(&stream)
}

// ToArrow reads an object obtained from Get, GetTimeout, GetContext or GetMany as Arrow, as
// GetArrow does. It takes the object whatever the result: its pin moves into the reader (do not
// Release the object afterwards; on error it is released). An object not stored as Arrow
// matches ErrNotArrow.
func (o *Object) ToArrow() (ArrowReader, error) {
	return ObjectToArrow(o)
}

// ObjectToArrow is Object.ToArrow.
func ObjectToArrow(o *Object) (ArrowReader, error) {
	if o == nil || o.h == nil {
		return nil, &Error{Status: StatusInvalidArgument, Message: "the object is nil or released"}
	}
	h := o.h
	o.h, o.Data, o.Metadata = nil, nil, nil
	stream := cdata.CArrowArrayStream{}
	err := locked(func() cstatus {
		return C.cidcache_object_to_arrow(h, (*C.struct_ArrowArrayStream)(unsafe.Pointer(&stream)))
	})
	if err != nil {
		return nil, err
	}
	return importStream(&stream)
}

func importStream(stream *cdata.CArrowArrayStream) (ArrowReader, error) {
	r, err := cdata.ImportCRecordReader(stream, nil)
	if err != nil {
		// The reader moved the stream in and released it on failure.
		return nil, &Error{Status: StatusArrow, Message: "importing the Arrow stream: " + err.Error()}
	}
	rr, ok := r.(ArrowReader)
	if !ok {
		return nil, &Error{Status: StatusInternal, Message: "arrow-go returned a reader without Release"}
	}
	return rr, nil
}

// PutArrow reads every record of r (an array.RecordReader: array.NewRecordReader, an ipc.Reader,
// a reader from GetArrow, ...) and stores them under key as one Arrow object (Arrow IPC, read
// back zero-copy). An empty reader keeps its schema. An existing key matches ErrAlreadyExists; a
// table the coordinator refuses, ErrArrow. r is read on the calling goroutine, not released.
func (c *Client) PutArrow(key []byte, r array.RecordReader) error {
	var recs []arrow.RecordBatch
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()
	for r.Next() {
		rec := r.RecordBatch()
		rec.Retain()
		recs = append(recs, rec)
	}
	if err := r.Err(); err != nil && !errors.Is(err, io.EOF) {
		return &Error{Status: StatusArrow, Message: "reading the records: " + err.Error()}
	}
	return c.PutRecords(key, r.Schema(), recs...)
}

// PutArrowFrom is PutArrow for an arrio.Reader (records of schema, io.EOF at the end).
func (c *Client) PutArrowFrom(key []byte, schema *arrow.Schema, r arrio.Reader) error {
	var recs []arrow.RecordBatch
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()
	for {
		rec, err := r.Read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return &Error{Status: StatusArrow, Message: "reading the records: " + err.Error()}
		}
		rec.Retain()
		recs = append(recs, rec)
	}
	return c.PutRecords(key, schema, recs...)
}

// PutRecords stores the records (all of schema) under key as one Arrow object; PutArrow for
// records already in memory. PutRecords(key, rec.Schema(), rec) stores one arrow.RecordBatch.
func (c *Client) PutRecords(key []byte, schema *arrow.Schema, recs ...arrow.RecordBatch) error {
	rdr, err := array.NewRecordReader(schema, recs)
	if err != nil {
		return &Error{Status: StatusInvalidArgument, Message: err.Error()}
	}
	defer rdr.Release()
	// The C struct lives in C memory: cidcache_put_arrow moves it, and Go pointers must not be
	// kept by C (the exported stream's private data is a cgo handle, not a Go pointer).
	stream := (*cdata.CArrowArrayStream)(C.calloc(1, C.size_t(unsafe.Sizeof(cdata.CArrowArrayStream{}))))
	defer C.free(unsafe.Pointer(stream))
	cdata.ExportRecordReader(rdr, stream)
	return locked(func() cstatus {
		kp, kl := keyPtr(key)
		return C.cidcache_put_arrow(c.c, kp, kl, (*C.struct_ArrowArrayStream)(unsafe.Pointer(stream)))
	})
}

// Writer is an object being written in place, in shared memory (zero-copy): fill Data and
// Metadata, then Seal (or Abort). Other clients do not see it before Seal. One goroutine at a
// time.
type Writer struct {
	w *C.cidcache_writer
	// Data is the object's writable data bytes (in shared memory), valid until Seal or Abort.
	Data []byte
	// Metadata is the object's writable metadata bytes, valid until Seal or Abort.
	Metadata []byte
}

// Create creates an object of dataLen data bytes and metaLen metadata bytes under key, to be
// written in place and sealed. An existing key matches ErrAlreadyExists; a read-only client
// gets ErrPermissionDenied.
func (c *Client) Create(key []byte, dataLen, metaLen int) (*Writer, error) {
	if dataLen < 0 || metaLen < 0 {
		return nil, &Error{Status: StatusInvalidArgument, Message: "negative length"}
	}
	var h *C.cidcache_writer
	err := locked(func() cstatus {
		kp, kl := keyPtr(key)
		return C.cidcache_create(c.c, kp, kl, C.size_t(dataLen), C.size_t(metaLen), &h)
	})
	if err != nil {
		return nil, err
	}
	w := &Writer{w: h}
	var n C.size_t
	if p := C.cidcache_writer_data(h, &n); p != nil && n > 0 {
		w.Data = unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))
	}
	if p := C.cidcache_writer_metadata(h, &n); p != nil && n > 0 {
		w.Metadata = unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))
	}
	return w, nil
}

// Seal makes the object immutable and visible to every client. The writer is done whatever the
// result (on error the object is abandoned); Data and Metadata become invalid.
func (w *Writer) Seal() error {
	if w.w == nil {
		return &Error{Status: StatusInvalidArgument, Message: "the writer was sealed or aborted"}
	}
	h := w.w
	w.w, w.Data, w.Metadata = nil, nil, nil
	return locked(func() cstatus { return C.cidcache_seal(h) })
}

// Abort abandons the object. Calling it after Seal or Abort does nothing.
func (w *Writer) Abort() error {
	if w.w == nil {
		return nil
	}
	h := w.w
	w.w, w.Data, w.Metadata = nil, nil, nil
	return locked(func() cstatus { return C.cidcache_abort(h) })
}

// ParseCID parses a text CID (v0 or v1) into its binary form.
func ParseCID(text string) ([]byte, error) {
	ct := C.CString(text)
	defer C.free(unsafe.Pointer(ct))
	var buf [C.CIDCACHE_MAX_KEY_LEN]byte
	var n C.size_t
	err := locked(func() cstatus {
		return C.cidcache_cid_parse(ct, (*C.uint8_t)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
	})
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), buf[:n]...), nil
}

// FormatCID formats a binary CID as text (v0 base58btc, v1 base32).
func FormatCID(cid []byte) (string, error) {
	var buf [256]C.char
	var n C.size_t
	err := locked(func() cstatus {
		kp, kl := keyPtr(cid)
		return C.cidcache_cid_format(kp, kl, &buf[0], C.size_t(len(buf)), &n)
	})
	if err != nil {
		return "", err
	}
	return C.GoStringN(&buf[0], C.int(n)), nil
}
