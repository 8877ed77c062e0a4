package cidcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
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
	"github.com/apache/arrow-go/v18/arrow/cdata"
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
	errs = c.PutMany(items[:1])
	if !errors.Is(errs[0], ErrAlreadyExists) {
		t.Fatalf("put many again: %v", errs)
	}
	objs, gerrs := c.GetMany([][]byte{items[0].Key, items[1].Key, key("absent")}, 0)
	if gerrs[0] != nil || gerrs[1] != nil || !errors.Is(gerrs[2], ErrNotFound) || objs[2] != nil {
		t.Fatalf("get many: %v", gerrs)
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
	rdr, err := array.NewRecordReader(schema, []arrow.RecordBatch{rec})
	if err != nil {
		t.Fatal(err)
	}
	var in cdata.CArrowArrayStream
	cdata.ExportRecordReader(rdr, &in)
	k := key("arrow")
	if err := c.PutArrow(k, unsafe.Pointer(&in)); err != nil {
		t.Fatal(err)
	}

	var out cdata.CArrowArrayStream
	if err := c.GetArrow(k, unsafe.Pointer(&out)); err != nil {
		t.Fatal(err)
	}
	r, err := cdata.ImportCRecordReader(&out, nil)
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
	got.Release()
	if rr, ok := r.(interface{ Release() }); ok {
		rr.Release()
	}
	assertPinned(t, c, 0)

	// Not an Arrow object.
	kr := key("raw")
	_ = c.Put(kr, []byte("raw"))
	var out2 cdata.CArrowArrayStream
	if err := c.GetArrow(kr, unsafe.Pointer(&out2)); !errors.Is(err, ErrNotArrow) {
		t.Fatalf("raw as arrow: %v", err)
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
}
