package cidcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

var (
	socketPath string
	storeName  string
)

// TestMain uses the daemon named by CIDCACHE_SOCKET / CIDCACHE_STORE (tests/run-ffi-tests.sh
// starts one), or starts its own from $CIDCACHED (default ../../target/debug/cidcached).
func TestMain(m *testing.M) {
	socketPath = os.Getenv("CIDCACHE_SOCKET")
	storeName = os.Getenv("CIDCACHE_STORE")
	var stop func()
	if socketPath == "" {
		var err error
		stop, err = startDaemon()
		if err != nil {
			fmt.Fprintln(os.Stderr, "cannot start cidcached:", err)
			os.Exit(2)
		}
	}
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.Exit(code)
}

func startDaemon() (func(), error) {
	bin := os.Getenv("CIDCACHED")
	if bin == "" {
		bin = "../../target/debug/cidcached"
	}
	dir, err := os.MkdirTemp("", "cidcache-go-")
	if err != nil {
		return nil, err
	}
	storeName = fmt.Sprintf("go%d", os.Getpid())
	socketPath = filepath.Join(dir, "s.sock")
	cmd := exec.Command(bin, "--store", storeName, "--socket", socketPath, "--data-dir", filepath.Join(dir, "data"),
		"-m", "64M", "--arena-size", "16M", "--index-capacity", "4096")
	cmd.Env = append(os.Environ(), "CIDCACHE_LOG=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(socketPath); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = os.RemoveAll(dir)
	}, nil
}

var keyCounter int
var keyMu sync.Mutex

func key(label string) []byte {
	keyMu.Lock()
	defer keyMu.Unlock()
	keyCounter++
	return []byte(fmt.Sprintf("go-%d-%d-%s", os.Getpid(), keyCounter, label))
}

func mustConnect(t testing.TB) *Client {
	t.Helper()
	c, err := ConnectSocket(socketPath)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func assertPinned(t *testing.T, c *Client, want int) {
	t.Helper()
	n, err := c.Pinned()
	if err != nil || n != want {
		t.Fatalf("pinned = %d, %v; want %d", n, err, want)
	}
}

func TestPutGetRelease(t *testing.T) {
	c := mustConnect(t)
	k := key("basic")
	if err := c.Put(k, []byte("hello from Go")); err != nil {
		t.Fatal(err)
	}
	err := c.Put(k, []byte("again"))
	if !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("second put: %v, want ErrAlreadyExists", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusAlreadyExists || e.Message == "" {
		t.Fatalf("error value: %#v", err)
	}
	o, err := c.Get(k)
	if err != nil {
		t.Fatal(err)
	}
	if string(o.Data) != "hello from Go" || len(o.Metadata) != 0 || o.IsArrow() {
		t.Fatalf("got %q", o.Data)
	}
	if !inSharedMapping(t, uintptr(unsafe.Pointer(&o.Data[0])), len(o.Data)) {
		t.Fatal("Data is not a view over the shared mapping")
	}
	assertPinned(t, c, 1)
	o.Release()
	o.Release()
	assertPinned(t, c, 0)

	if _, err := c.Get(key("missing")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	if _, err := c.Get(make([]byte, 70)); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("long key: %v", err)
	}
	ok, err := c.Contains(k)
	if err != nil || !ok {
		t.Fatalf("contains: %v %v", ok, err)
	}
	if err := c.Delete(k); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}

	km := key("meta")
	if err := c.PutWithOptions(km, []byte("d"), []byte("mm"), PutOptions{Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	o, err = c.Get(km)
	if err != nil || string(o.Metadata) != "mm" {
		t.Fatalf("metadata: %v", err)
	}
	o.Release()
}

func TestBatches(t *testing.T) {
	c := mustConnect(t)
	items := []Item{{key("b0"), []byte("zero")}, {key("b1"), []byte("one")}, {nil, []byte("bad")}}
	errs := c.PutMany(items)
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], ErrInvalidKey) {
		t.Fatalf("put many: %v", errs)
	}
	if !strings.Contains(errs[2].Error(), "items[2]") || !strings.Contains(errs[2].Error(), "empty") {
		t.Fatalf("put many item message: %v", errs[2])
	}
	errs = c.PutMany(items[:2])
	for i, err := range errs {
		// The library's message for each item, not only the status name.
		if !errors.Is(err, ErrAlreadyExists) || !strings.Contains(err.Error(), fmt.Sprintf("items[%d]: ", i)) ||
			!strings.Contains(err.Error(), "already") {
			t.Fatalf("put many again, item %d: %v", i, err)
		}
	}
	objs, gerrs := c.GetMany([][]byte{items[0].Key, items[1].Key, key("absent"), nil}, 0)
	if gerrs[0] != nil || gerrs[1] != nil || !errors.Is(gerrs[2], ErrNotFound) || objs[2] != nil {
		t.Fatalf("get many: %v", gerrs)
	}
	if !strings.Contains(gerrs[2].Error(), "keys[2]") || !errors.Is(gerrs[3], ErrInvalidKey) ||
		!strings.Contains(gerrs[3].Error(), "keys[3]") {
		t.Fatalf("get many messages: %v / %v", gerrs[2], gerrs[3])
	}
	if string(objs[0].Data) != "zero" || string(objs[1].Data) != "one" {
		t.Fatal("get many data")
	}
	assertPinned(t, c, 2)
	for _, o := range objs {
		if o != nil {
			o.Release()
		}
	}
	assertPinned(t, c, 0)
}

func TestWaits(t *testing.T) {
	c := mustConnect(t)
	if _, err := c.GetTimeout(key("never"), 30*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("timeout: %v", err)
	}
	if _, err := c.GetTimeout(key("never"), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no wait: %v", err)
	}
	if _, errs := c.GetMany([][]byte{key("never-many")}, 30*time.Millisecond); !errors.Is(errs[0], ErrTimeout) {
		t.Fatalf("many timeout: %v", errs[0])
	}
	k := key("late")
	go func() {
		time.Sleep(100 * time.Millisecond)
		c2, err := ConnectSocket(socketPath)
		if err == nil {
			_ = c2.Put(k, []byte("late"))
			_ = c2.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o, err := c.GetContext(ctx, k, -1)
	if err != nil || string(o.Data) != "late" {
		t.Fatalf("GetContext: %v", err)
	}
	o.Release()
	// A hit through the async path.
	o, err = c.GetContext(ctx, k, 0)
	if err != nil || string(o.Data) != "late" {
		t.Fatalf("GetContext hit: %v", err)
	}
	o.Release()
	// Cancellation while waiting.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	start := time.Now()
	if _, err := c.GetContext(ctx2, key("never2"), -1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("cancellation took too long")
	}
	// The library's own timeout.
	if _, err := c.GetContext(context.Background(), key("never3"), 30*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("async timeout: %v", err)
	}
	assertPinned(t, c, 0)
}

// TestPutContext: puts that wait in the netpoller, small and large; an existing key; a
// cancelled context.
func TestPutContext(t *testing.T) {
	c := mustConnect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i * 3)
	}
	ks, kl := key("putctx-small"), key("putctx-large")
	if err := c.PutContext(ctx, ks, []byte("small"), nil, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.PutContext(ctx, kl, big, []byte("m"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	o, err := c.Get(kl)
	if err != nil || len(o.Data) != len(big) || o.Data[len(big)-1] != big[len(big)-1] || string(o.Metadata) != "m" {
		t.Fatalf("large async put: %v", err)
	}
	o.Release()
	if err := c.PutContext(ctx, ks, []byte("again"), nil, PutOptions{}); !errors.Is(err, ErrAlreadyExists) ||
		!strings.Contains(err.Error(), "already") {
		t.Fatalf("existing key: %v", err)
	}
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := c.PutContext(done, key("putctx-cancelled"), big, nil, PutOptions{}); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestConcurrentGoroutines(t *testing.T) {
	c := mustConnect(t)
	k := key("shared")
	if err := c.Put(k, []byte("shared")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var bad sync.Map
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				o, err := c.Get(k)
				if err != nil || string(o.Data) != "shared" {
					bad.Store(g, err)
					return
				}
				o.Release()
			}
		}(g)
	}
	wg.Wait()
	bad.Range(func(k, v any) bool { t.Errorf("goroutine %v: %v", k, v); return true })
	assertPinned(t, c, 0)
}

func TestCIDAndControl(t *testing.T) {
	c := mustConnect(t)
	const text = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
	bin, err := ParseCID(text)
	if err != nil || len(bin) != 36 {
		t.Fatalf("parse: %v", err)
	}
	back, err := FormatCID(bin)
	if err != nil || back != text {
		t.Fatalf("format: %q %v", back, err)
	}
	if _, err := ParseCID("nope"); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("bad cid: %v", err)
	}
	content := []byte(fmt.Sprintf("go content %d", os.Getpid()))
	cid, err := c.PutContent(content)
	if err != nil || len(cid) != 36 {
		t.Fatalf("put content: %v", err)
	}
	o, err := c.Get(cid)
	if err != nil || string(o.Data) != string(content) {
		t.Fatalf("get content: %v", err)
	}
	o.Release()
	list, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range list {
		if string(e.Key) == string(cid) {
			found = e.DataLen == uint64(len(content))
		}
	}
	if !found {
		t.Fatal("put_content object not listed")
	}
	stats, err := c.Stats()
	if err != nil || len(stats) == 0 {
		t.Fatalf("stats: %v %v", stats, err)
	}
}

// TestArrowZeroCopy stores a record batch through the Arrow C stream interface and reads it back
// with arrow-go's cdata: the imported buffers must point into the shared mapping.
func TestArrowZeroCopy(t *testing.T) {
	c := mustConnect(t)
	mem := memory.NewGoAllocator()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{1, 2, 3, 4}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"a", "bb", "", "dddd"}, []bool{true, true, false, true})
	rec := b.NewRecordBatch()
	defer rec.Release()
	k := key("arrow")
	if err := c.PutRecords(k, schema, rec); err != nil {
		t.Fatal(err)
	}
	r, err := c.GetArrow(k)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if !array.RecordEqual(got, rec) {
		t.Fatalf("round trip differs:\n%v\n%v", got, rec)
	}
	ids := got.Column(0).(*array.Int64)
	if ids.Value(3) != 4 {
		t.Fatal("values")
	}
	for ci, col := range got.Columns() {
		for bi, buf := range col.Data().Buffers() {
			if buf == nil || buf.Len() == 0 {
				continue
			}
			p := uintptr(unsafe.Pointer(&buf.Bytes()[0]))
			if !inSharedMapping(t, p, buf.Len()) {
				t.Errorf("column %d buffer %d at %#x is not in the shared mapping (copied?)", ci, bi, p)
			}
		}
	}
	assertPinned(t, c, 1)
	got.Retain()
	if _, err := r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
	got.Release()
	// Read to its end, its record released: the reader still holds the pin.
	assertPinned(t, c, 1)
	r.Release()
	assertPinned(t, c, 0)

	// PutArrow from an arrio.Reader, several records; ObjectToArrow on an object from Get.
	rdr, err := array.NewRecordReader(schema, []arrow.RecordBatch{rec, rec})
	if err != nil {
		t.Fatal(err)
	}
	k2 := key("arrow-reader")
	if err := c.PutArrow(k2, rdr); err != nil {
		t.Fatal(err)
	}
	rdr.Release()
	if err := c.PutArrowFrom(k2, schema, &emptyReader{}); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("existing key: %v", err)
	}
	o, err := c.Get(k2)
	if err != nil || !o.IsArrow() {
		t.Fatalf("get arrow object: %v", err)
	}
	r2, err := o.ToArrow()
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for r2.Next() {
		rows += int(r2.RecordBatch().NumRows())
	}
	if rows != 8 {
		t.Fatalf("rows %d", rows)
	}
	r2.Release()
	o.Release() // taken by ToArrow: does nothing
	assertPinned(t, c, 0)

	// Not an Arrow object: its own status, distinct from a bad argument.
	kr := key("raw")
	_ = c.Put(kr, []byte("raw"))
	if _, err := c.GetArrow(kr); !errors.Is(err, ErrNotArrow) || !strings.Contains(err.Error(), "not stored as an Arrow object") {
		t.Fatalf("raw as arrow: %v", err)
	}
	o, err = c.Get(kr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ObjectToArrow(o); !errors.Is(err, ErrNotArrow) {
		t.Fatalf("raw object as arrow: %v", err)
	}
	if _, err := ObjectToArrow(o); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("taken object: %v", err)
	}
	if _, err := c.GetArrow(key("absent")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent: %v", err)
	}
	assertPinned(t, c, 0)

	// An empty arrio.Reader keeps its schema; read back, the reader yields nothing.
	ke := key("arrow-empty")
	if err := c.PutArrowFrom(ke, schema, &emptyReader{}); err != nil {
		t.Fatal(err)
	}
	re, err := c.GetArrow(ke)
	if err != nil || !re.Schema().Equal(schema) || re.Next() {
		t.Fatalf("empty table: %v", err)
	}
	re.Release()
}

type emptyReader struct{}

func (*emptyReader) Read() (arrow.RecordBatch, error) { return nil, io.EOF }

// TestWriter writes an object in place, seals it; aborts another; a read-only client (by store
// name) cannot create.
func TestWriter(t *testing.T) {
	c := mustConnect(t)
	k := key("writer")
	w, err := c.Create(k, 1000, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Data) != 1000 || len(w.Metadata) != 4 {
		t.Fatalf("writer lengths %d %d", len(w.Data), len(w.Metadata))
	}
	for i := range w.Data {
		w.Data[i] = byte(i)
	}
	copy(w.Metadata, "meta")
	if _, err := c.Get(k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("visible before seal: %v", err)
	}
	if err := w.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := w.Seal(); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("second seal: %v", err)
	}
	o, err := c.Get(k)
	if err != nil || o.Data[999] != byte(999%256) || string(o.Metadata) != "meta" {
		t.Fatalf("sealed object: %v", err)
	}
	o.Release()
	if _, err := c.Create(k, 10, 0); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("create existing: %v", err)
	}
	ka := key("aborted")
	w, err = c.Create(ka, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ka); !errors.Is(err, ErrNotFound) {
		t.Fatalf("aborted object: %v", err)
	}
	if err := c.Put(ka, []byte("again")); err != nil {
		t.Fatalf("key reusable after abort: %v", err)
	}
}

// inSharedMapping reports whether [p, p+n) lies in a mapping of /dev/shm/cidcache.<store>.d*.
func inSharedMapping(t testing.TB, p uintptr, n int) bool {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prefix := "/dev/shm/cidcache." + storeName + ".d"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "/")
		if i < 0 || !strings.HasPrefix(line[i:], prefix) {
			continue
		}
		var lo, hi uintptr
		if _, err := fmt.Sscanf(line, "%x-%x", &lo, &hi); err != nil {
			continue
		}
		if p >= lo && p+uintptr(n) <= hi {
			return true
		}
	}
	return false
}

// BenchmarkGetHit measures a hit (Get + Release) through the Go package. Besides ns/op (the mean),
// it reports the median of per-batch means (100 hits a batch) as median-ns/hit.
func BenchmarkGetHit(b *testing.B) {
	c := mustConnect(b)
	k := key("bench")
	if err := c.Put(k, make([]byte, 4096)); err != nil {
		b.Fatal(err)
	}
	const batch = 100
	samples := make([]float64, 0, b.N/batch+1)
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := batch
		if b.N-done < n {
			n = b.N - done
		}
		start := time.Now()
		for i := 0; i < n; i++ {
			o, err := c.Get(k)
			if err != nil {
				b.Fatal(err)
			}
			o.Release()
		}
		samples = append(samples, float64(time.Since(start).Nanoseconds())/float64(n))
		done += n
	}
	b.StopTimer()
	sort.Float64s(samples)
	b.ReportMetric(samples[len(samples)/2], "median-ns/hit")
}

// TestStatusesAndSentinels: every status has its sentinel, and errors say what happened.
func TestStatusesAndSentinels(t *testing.T) {
	for i, e := range sentinels {
		if e.Status != Status(i+1) || e.Status.String() == "CIDCACHE_UNKNOWN" {
			t.Fatalf("sentinel %d: %v %s", i, e.Status, e.Status)
		}
	}
	if len(sentinels) != int(StatusNotArrow) {
		t.Fatalf("%d sentinels for %d statuses", len(sentinels), StatusNotArrow)
	}
	// No daemon: no socket, or a socket nobody listens on.
	dir := t.TempDir()
	_, err := ConnectSocket(filepath.Join(dir, "none.sock"))
	if !errors.Is(err, ErrNotRunning) || errors.Is(err, ErrDisconnected) || !strings.Contains(err.Error(), "none.sock") {
		t.Fatalf("no daemon: %v", err)
	}
	_, err = ConnectStore("no-such-store-" + fmt.Sprint(os.Getpid()))
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("no store: %v", err)
	}
}

// TestConnectStoreFromEnv: ConnectStore("") connects to $CIDCACHE_STORE, found at its default
// socket path under $XDG_RUNTIME_DIR (made a link to the test daemon's socket).
func TestConnectStoreFromEnv(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "cidcache"), 0o700); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("goenv%d", os.Getpid())
	abs, err := filepath.Abs(socketPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(dir, "cidcache", name+".sock")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_RUNTIME_DIR", dir)
	t.Setenv("CIDCACHE_STORE", name)
	c, err := ConnectStore("")
	if err != nil {
		t.Fatalf("ConnectStore(\"\") with CIDCACHE_STORE=%s: %v", name, err)
	}
	defer c.Close()
	if err := c.Put(key("env"), []byte("e")); err != nil {
		t.Fatal(err)
	}
	// Read-only, by store name.
	ro, err := ConnectStoreReadOnly(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Create(key("ro"), 10, 0); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("read-only create: %v", err)
	}
	if err := ro.Put(key("ro"), []byte("x")); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("read-only put: %v", err)
	}
}
