// cidcache.hpp: header-only C++17 wrapper of the cidcache C ABI (cidcache.h).
//
// - RAII: Client, Object, Writer, AsyncGet and ArrowStream free their handles in destructors;
//   all are move-only.
// - Object is a zero-copy view of a pinned object in shared memory: data() and metadata() are
//   spans over the mapping, valid while the Object lives.
// - Errors are exceptions (cidcache::Error) carrying the status and the library's message.
//   A miss is not an error: get() returns std::optional<Object>.
// - Thread safety follows the C API: a Client may be used from several threads at once; an
//   Object may be read from several threads; a Writer or AsyncGet by one thread at a time.
//
// SPDX-License-Identifier: Apache-2.0
#ifndef CIDCACHE_HPP
#define CIDCACHE_HPP

#include "cidcache.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <type_traits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__has_include)
#if __has_include(<version>)
#include <version>
#endif
#endif
#if defined(__cpp_lib_span) && __cpp_lib_span >= 202002L
#include <span>
#endif

namespace cidcache {

#if defined(__cpp_lib_span) && __cpp_lib_span >= 202002L
/// Under C++20, std::span.
template <typename T>
using span = std::span<T>;
#else
/// A minimal std::span stand-in for C++17: a pointer and a length, no ownership.
template <typename T>
class span {
public:
    using element_type = T;
    using value_type = std::remove_cv_t<T>;
    using size_type = std::size_t;
    using pointer = T*;
    using reference = T&;
    using iterator = T*;

    constexpr span() noexcept = default;
    constexpr span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
    /// From any contiguous container (std::vector, std::array, std::string, another span).
    template <typename C,
              typename P = decltype(std::data(std::declval<C&>())),
              typename = std::enable_if_t<
                  std::is_convertible_v<std::remove_pointer_t<P> (*)[], T (*)[]>>>
    constexpr span(C&& c) noexcept : data_(std::data(c)), size_(std::size(c)) {}

    constexpr T* data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }
    constexpr std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
    constexpr bool empty() const noexcept { return size_ == 0; }
    constexpr T& operator[](std::size_t i) const noexcept { return data_[i]; }
    constexpr T* begin() const noexcept { return data_; }
    constexpr T* end() const noexcept { return data_ + size_; }
    constexpr T& front() const noexcept { return data_[0]; }
    constexpr T& back() const noexcept { return data_[size_ - 1]; }
    constexpr span subspan(std::size_t offset, std::size_t count) const noexcept {
        return span(data_ + offset, count);
    }

private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};
#endif

/// Read-only bytes (of an object in shared memory, or a key).
using bytes_view = span<const std::uint8_t>;
/// Writable bytes (of an object being created).
using mutable_bytes = span<std::uint8_t>;

/// An error of the C API: the status and this thread's last-error message at the time.
class Error : public std::runtime_error {
public:
    Error(cidcache_status status, const std::string& message)
        : std::runtime_error(message), status_(status) {}
    /// The stable status code.
    cidcache_status status() const noexcept { return status_; }
    /// The status name, e.g. "CIDCACHE_ALREADY_EXISTS".
    const char* status_name() const noexcept { return cidcache_status_name(status_); }

private:
    cidcache_status status_;
};

namespace detail {
[[noreturn]] inline void raise(cidcache_status s) {
    throw Error(s, std::string(cidcache_status_name(s)) + ": " + cidcache_last_error());
}
inline void check(cidcache_status s) {
    if (s != CIDCACHE_OK) raise(s);
}
inline const std::uint8_t* bytes_of(std::string_view s) {
    return reinterpret_cast<const std::uint8_t*>(s.data());
}
inline std::int64_t millis(std::chrono::milliseconds t) { return static_cast<std::int64_t>(t.count()); }
}  // namespace detail

/// A key given as bytes or text (text keys are used as their bytes, not parsed as CIDs).
///
/// Owning: the bytes are copied in (inline, no allocation, for valid keys of up to
/// CIDCACHE_MAX_KEY_LEN bytes), so a Key built from a temporary string or vector stays valid.
/// A longer key is kept (on the heap) so that the library reports it as CIDCACHE_INVALID_KEY.
class Key {
public:
    Key(bytes_view b) { assign(b.data(), b.size()); }
    Key(std::string_view s) { assign(detail::bytes_of(s), s.size()); }
    Key(const char* s) : Key(std::string_view(s)) {}
    Key(const std::string& s) : Key(std::string_view(s)) {}
    Key(const std::vector<std::uint8_t>& v) { assign(v.data(), v.size()); }
    Key(const Key& o) { assign(o.data(), o.size()); }
    Key& operator=(const Key& o) {
        if (this != &o) {
            std::vector<std::uint8_t> copy(o.data(), o.data() + o.size());
            assign(copy.data(), copy.size());
        }
        return *this;
    }
    const std::uint8_t* data() const noexcept { return long_.empty() ? buf_ : long_.data(); }
    std::size_t size() const noexcept { return len_; }

private:
    void assign(const std::uint8_t* p, std::size_t n) {
        len_ = n;
        if (n <= CIDCACHE_MAX_KEY_LEN) {
            long_.clear();
            if (n) std::memcpy(buf_, p, n);
        } else {
            long_.assign(p, p + n);
        }
    }
    std::uint8_t buf_[CIDCACHE_MAX_KEY_LEN] = {};
    std::size_t len_ = 0;
    std::vector<std::uint8_t> long_;
};

/// A pinned, sealed object: a zero-copy, read-only view into shared memory, valid (and
/// unchanged) until this Object is destroyed or reset. Move-only.
class Object {
public:
    Object() noexcept = default;
    /// Takes ownership of a handle from the C API.
    explicit Object(cidcache_object* handle) : handle_(handle) {
        if (handle_) detail::check(cidcache_object_view(handle_, &view_));
    }
    Object(Object&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)), view_(o.view_) {}
    Object& operator=(Object&& o) noexcept {
        if (this != &o) {
            reset();
            handle_ = std::exchange(o.handle_, nullptr);
            view_ = o.view_;
        }
        return *this;
    }
    Object(const Object&) = delete;
    Object& operator=(const Object&) = delete;
    ~Object() { reset(); }

    /// The data bytes.
    bytes_view data() const noexcept { return handle_ ? bytes_view(view_.data, view_.data_len) : bytes_view(); }
    /// The metadata bytes.
    bytes_view metadata() const noexcept {
        return handle_ ? bytes_view(view_.metadata, view_.metadata_len) : bytes_view();
    }
    /// The data as text (no copy).
    std::string_view str() const noexcept {
        auto d = data();
        return std::string_view(reinterpret_cast<const char*>(d.data()), d.size());
    }
    std::size_t size() const noexcept { return handle_ ? view_.data_len : 0; }
    /// Whether the object was stored as Arrow IPC.
    bool is_arrow() const noexcept { return handle_ && (view_.flags & CIDCACHE_OBJECT_ARROW); }
    explicit operator bool() const noexcept { return handle_ != nullptr; }
    /// Unpins now (the spans become invalid).
    void reset() noexcept {
        if (handle_) cidcache_release(std::exchange(handle_, nullptr));
    }
    /// Gives up ownership of the C handle.
    cidcache_object* release() noexcept { return std::exchange(handle_, nullptr); }
    cidcache_object* handle() const noexcept { return handle_; }

private:
    friend class Client;
    friend class AsyncGet;
    Object(cidcache_object* h, const cidcache_view& v) noexcept : handle_(h), view_(v) {}
    cidcache_object* handle_ = nullptr;
    cidcache_view view_{};
};

/// An owned Arrow C array (struct ArrowArray, one record batch as a struct array), released by the
/// destructor unless moved out with release(). Its buffers point into shared memory (zero-copy)
/// and keep the object pinned while it lives.
class ArrowBatch {
public:
    ArrowBatch() noexcept { array_.release = nullptr; }
    ArrowBatch(ArrowBatch&& o) noexcept : array_(o.array_) { o.array_.release = nullptr; }
    ArrowBatch& operator=(ArrowBatch&& o) noexcept {
        if (this != &o) {
            reset();
            array_ = o.array_;
            o.array_.release = nullptr;
        }
        return *this;
    }
    ArrowBatch(const ArrowBatch&) = delete;
    ArrowBatch& operator=(const ArrowBatch&) = delete;
    ~ArrowBatch() { reset(); }

    ArrowArray* get() noexcept { return &array_; }
    const ArrowArray* operator->() const noexcept { return &array_; }
    /// Rows in the batch.
    std::int64_t length() const noexcept { return array_.length; }
    explicit operator bool() const noexcept { return array_.release != nullptr; }
    /// Moves the array into `out` (which the caller then owns).
    void release(ArrowArray* out) noexcept {
        *out = array_;
        array_.release = nullptr;
    }
    void reset() noexcept {
        if (array_.release) array_.release(&array_);
    }

private:
    ArrowArray array_;
};

/// An owned Arrow C schema (struct ArrowSchema), released by the destructor.
class ArrowSchemaOwned {
public:
    ArrowSchemaOwned() noexcept { schema_.release = nullptr; }
    ArrowSchemaOwned(ArrowSchemaOwned&& o) noexcept : schema_(o.schema_) { o.schema_.release = nullptr; }
    ArrowSchemaOwned& operator=(ArrowSchemaOwned&& o) noexcept {
        if (this != &o) {
            reset();
            schema_ = o.schema_;
            o.schema_.release = nullptr;
        }
        return *this;
    }
    ArrowSchemaOwned(const ArrowSchemaOwned&) = delete;
    ArrowSchemaOwned& operator=(const ArrowSchemaOwned&) = delete;
    ~ArrowSchemaOwned() { reset(); }

    ArrowSchema* get() noexcept { return &schema_; }
    const ArrowSchema* operator->() const noexcept { return &schema_; }
    void reset() noexcept {
        if (schema_.release) schema_.release(&schema_);
    }

private:
    ArrowSchema schema_;
};

/// An owned Arrow C stream (struct ArrowArrayStream); released by the destructor unless moved
/// out with release() (e.g. into pyarrow or another Arrow implementation). Read it as a reader:
/// schema() once, then next() until it returns std::nullopt. The object stays pinned until the
/// stream and every batch read from it are destroyed (reading to the end does not unpin).
class ArrowStream {
public:
    ArrowStream() noexcept { stream_.release = nullptr; }
    ArrowStream(ArrowStream&& o) noexcept : stream_(o.stream_) { o.stream_.release = nullptr; }
    ArrowStream& operator=(ArrowStream&& o) noexcept {
        if (this != &o) {
            reset();
            stream_ = o.stream_;
            o.stream_.release = nullptr;
        }
        return *this;
    }
    ArrowStream(const ArrowStream&) = delete;
    ArrowStream& operator=(const ArrowStream&) = delete;
    ~ArrowStream() { reset(); }

    /// The C struct (to call get_schema / get_next on, or to hand to a consumer).
    ArrowArrayStream* get() noexcept { return &stream_; }
    ArrowArrayStream* operator->() noexcept { return &stream_; }
    explicit operator bool() const noexcept { return stream_.release != nullptr; }
    /// Moves the stream into `out` (which the caller then owns).
    void release(ArrowArrayStream* out) noexcept {
        *out = stream_;
        stream_.release = nullptr;
    }
    void reset() noexcept {
        if (stream_.release) stream_.release(&stream_);
    }

    /// The schema of the records (a struct type whose children are the columns). Throws
    /// CIDCACHE_ARROW with the stream's message on failure, CIDCACHE_INVALID_ARGUMENT when the
    /// stream was released or moved out.
    ArrowSchemaOwned schema() {
        live();
        ArrowSchemaOwned out;
        if (int rc = stream_.get_schema(&stream_, out.get())) fail(rc);
        return out;
    }
    /// The next record batch, or std::nullopt at the end. Throws as schema().
    std::optional<ArrowBatch> next() {
        live();
        ArrowBatch b;
        if (int rc = stream_.get_next(&stream_, b.get())) fail(rc);
        if (!b) return std::nullopt;
        return b;
    }

private:
    void live() const {
        if (!stream_.release)
            throw Error(CIDCACHE_INVALID_ARGUMENT, "CIDCACHE_INVALID_ARGUMENT: the Arrow stream is released");
    }
    [[noreturn]] void fail(int rc) {
        const char* m = stream_.get_last_error ? stream_.get_last_error(&stream_) : nullptr;
        throw Error(CIDCACHE_ARROW, std::string("CIDCACHE_ARROW: Arrow stream error ") + std::to_string(rc) +
                                        (m ? std::string(": ") + m : std::string()));
    }
    ArrowArrayStream stream_;
};

/// An object being written in place. seal() publishes it; destroyed unsealed, it is aborted.
class Writer {
public:
    Writer(Writer&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
    Writer& operator=(Writer&& o) noexcept {
        if (this != &o) {
            abort_quietly();
            handle_ = std::exchange(o.handle_, nullptr);
        }
        return *this;
    }
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    ~Writer() { abort_quietly(); }

    /// The writable data bytes (in shared memory).
    mutable_bytes data() {
        std::size_t n = 0;
        std::uint8_t* p = cidcache_writer_data(handle_, &n);
        return mutable_bytes(p, p ? n : 0);
    }
    /// The writable metadata bytes.
    mutable_bytes metadata() {
        std::size_t n = 0;
        std::uint8_t* p = cidcache_writer_metadata(handle_, &n);
        return mutable_bytes(p, p ? n : 0);
    }
    /// Publishes the object (immutable afterwards). The Writer is empty afterwards.
    void seal() { detail::check(cidcache_seal(std::exchange(handle_, nullptr))); }
    /// Abandons the object. The Writer is empty afterwards.
    void abort() { detail::check(cidcache_abort(std::exchange(handle_, nullptr))); }

private:
    friend class Client;
    explicit Writer(cidcache_writer* h) noexcept : handle_(h) {}
    void abort_quietly() noexcept {
        if (handle_) (void)cidcache_abort(std::exchange(handle_, nullptr));
    }
    cidcache_writer* handle_ = nullptr;
};

/// A non-blocking get: poll fd() for readability (epoll, poll, your event loop), then result().
class AsyncGet {
public:
    AsyncGet(AsyncGet&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
    AsyncGet& operator=(AsyncGet&& o) noexcept {
        if (this != &o) {
            cidcache_get_op_free(handle_);
            handle_ = std::exchange(o.handle_, nullptr);
        }
        return *this;
    }
    AsyncGet(const AsyncGet&) = delete;
    AsyncGet& operator=(const AsyncGet&) = delete;
    /// Cancels the get if it is still running and closes the fd.
    ~AsyncGet() { cidcache_get_op_free(handle_); }

    /// Readable once the result is ready (stays readable; do not read it). Owned by this object.
    int fd() const noexcept { return cidcache_get_op_fd(handle_); }
    bool ready() const noexcept { return cidcache_get_op_ready(handle_); }
    /// The result once ready(): the object, or std::nullopt when it did not appear in time.
    /// Throws when not ready, on a second call, or on an error.
    std::optional<Object> result() {
        cidcache_object* o = nullptr;
        cidcache_view v{};
        cidcache_status s = cidcache_get_op_result(handle_, &o, &v);
        if (s == CIDCACHE_NOT_FOUND || s == CIDCACHE_TIMEOUT) return std::nullopt;
        detail::check(s);
        return Object(o, v);
    }

private:
    friend class Client;
    explicit AsyncGet(cidcache_get_op* h) noexcept : handle_(h) {}
    cidcache_get_op* handle_ = nullptr;
};

/// One listed object.
struct ListEntry {
    std::vector<std::uint8_t> key;
    std::uint64_t data_len;
    std::uint64_t metadata_len;
    bool is_arrow;
};

/// Per-item outcome of a batch.
using Status = cidcache_status;

/// A connection to a store. Move-only; usable from several threads at once.
class Client {
public:
    /// Connects to the coordinator listening on `socket_path`.
    static Client connect_socket(const std::string& socket_path, bool read_only = false) {
        cidcache_client* c = nullptr;
        detail::check(cidcache_connect(socket_path.c_str(), nullptr,
                                       read_only ? CIDCACHE_CONNECT_READ_ONLY : 0, &c));
        return Client(c);
    }
    /// Connects to the store named `store` at its default socket path.
    static Client connect_store(const std::string& store = "default", bool read_only = false) {
        cidcache_client* c = nullptr;
        detail::check(cidcache_connect(nullptr, store.c_str(),
                                       read_only ? CIDCACHE_CONNECT_READ_ONLY : 0, &c));
        return Client(c);
    }

    Client(Client&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
    Client& operator=(Client&& o) noexcept {
        if (this != &o) {
            cidcache_disconnect(handle_);
            handle_ = std::exchange(o.handle_, nullptr);
        }
        return *this;
    }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    /// Disconnects; Objects, Writers, AsyncGets and ArrowStreams from it stay valid.
    ~Client() { cidcache_disconnect(handle_); }

    cidcache_client* handle() const noexcept { return handle_; }

    /// Stores `data` under `key`. Throws Error (e.g. CIDCACHE_ALREADY_EXISTS).
    void put(Key key, bytes_view data, bytes_view metadata = {}, std::uint32_t flags = 0) const {
        detail::check(cidcache_put_ex(handle_, key.data(), key.size(), data.data(), data.size(),
                                      metadata.data(), metadata.size(), flags));
    }
    void put(Key key, std::string_view data) const {
        put(key, bytes_view(detail::bytes_of(data), data.size()));
    }
    /// Stores `data` under its CIDv1 (raw, sha2-256); returns the binary CID.
    std::vector<std::uint8_t> put_content(bytes_view data) const {
        std::vector<std::uint8_t> cid(CIDCACHE_CID_V1_RAW_LEN);
        std::size_t n = 0;
        detail::check(cidcache_put_content(handle_, data.data(), data.size(), cid.data(), cid.size(), &n));
        cid.resize(n);
        return cid;
    }

    /// The object if it is sealed now (a hit: no system call, no lock), else std::nullopt.
    std::optional<Object> get(Key key) const {
        cidcache_object* o = nullptr;
        cidcache_view v;
        cidcache_status s = cidcache_get(handle_, key.data(), key.size(), &o, &v);
        if (s == CIDCACHE_NOT_FOUND) return std::nullopt;
        detail::check(s);
        return Object(o, v);
    }
    /// Waits up to `timeout` (negative: without limit) for the object; std::nullopt when it was
    /// not sealed in time (the C status is CIDCACHE_TIMEOUT).
    std::optional<Object> get(Key key, std::chrono::milliseconds timeout) const {
        cidcache_object* o = nullptr;
        cidcache_view v;
        cidcache_status s = cidcache_get_timeout(handle_, key.data(), key.size(),
                                                 detail::millis(timeout), &o, &v);
        if (s == CIDCACHE_NOT_FOUND || s == CIDCACHE_TIMEOUT) return std::nullopt;
        detail::check(s);
        return Object(o, v);
    }
    /// Starts a non-blocking get (see AsyncGet).
    AsyncGet get_async(Key key, std::chrono::milliseconds timeout) const {
        cidcache_get_op* op = nullptr;
        detail::check(cidcache_get_async(handle_, key.data(), key.size(), detail::millis(timeout), &op));
        return AsyncGet(op);
    }
    /// Gets many keys; one entry per key: the object, or std::nullopt when missing (status
    /// CIDCACHE_NOT_FOUND, or CIDCACHE_TIMEOUT after a wait). Other per-item errors are reported
    /// in `statuses` when given, else thrown.
    std::vector<std::optional<Object>> get_many(const std::vector<Key>& keys,
                                                std::chrono::milliseconds timeout = std::chrono::milliseconds(0),
                                                std::vector<Status>* statuses = nullptr) const {
        std::vector<cidcache_key> ks;
        ks.reserve(keys.size());
        for (const Key& k : keys) ks.push_back(cidcache_key{k.data(), k.size()});
        std::vector<cidcache_object*> objs(keys.size(), nullptr);
        std::vector<cidcache_view> views(keys.size());
        std::vector<cidcache_status> st(keys.size(), CIDCACHE_OK);
        cidcache_status s = cidcache_get_many(handle_, ks.data(), ks.size(), detail::millis(timeout),
                                              objs.data(), views.data(), st.data());
        std::vector<std::optional<Object>> out;
        out.reserve(keys.size());
        for (std::size_t i = 0; i < keys.size(); i++) {
            if (objs[i]) out.emplace_back(Object(objs[i], views[i]));
            else out.emplace_back(std::nullopt);
        }
        if (statuses) {
            *statuses = std::move(st);
        } else if (s != CIDCACHE_OK && s != CIDCACHE_NOT_FOUND && s != CIDCACHE_TIMEOUT) {
            detail::raise(s);
        }
        return out;
    }
    /// Stores many (key, data) pairs; returns one status per item (partial success is normal).
    std::vector<Status> put_many(const std::vector<std::pair<Key, bytes_view>>& items) const {
        std::vector<cidcache_put_item> its;
        its.reserve(items.size());
        for (const auto& [k, d] : items) its.push_back(cidcache_put_item{k.data(), k.size(), d.data(), d.size()});
        std::vector<cidcache_status> st(items.size(), CIDCACHE_OK);
        (void)cidcache_put_many(handle_, its.data(), its.size(), st.data());
        return st;
    }

    /// Creates an object to write in place; seal() it.
    Writer create(Key key, std::size_t data_len, std::size_t metadata_len = 0) const {
        cidcache_writer* w = nullptr;
        detail::check(cidcache_create(handle_, key.data(), key.size(), data_len, metadata_len, &w));
        return Writer(w);
    }

    bool contains(Key key) const {
        bool b = false;
        detail::check(cidcache_contains(handle_, key.data(), key.size(), &b));
        return b;
    }
    /// Deletes `key` (`delete` is a C++ keyword). Throws CIDCACHE_NOT_FOUND when absent.
    void remove(Key key) const { detail::check(cidcache_delete(handle_, key.data(), key.size())); }

    std::vector<ListEntry> list() const {
        cidcache_list_entry* e = nullptr;
        std::size_t n = 0;
        detail::check(cidcache_list(handle_, &e, &n));
        std::vector<ListEntry> out;
        out.reserve(n);
        for (std::size_t i = 0; i < n; i++)
            out.push_back(ListEntry{std::vector<std::uint8_t>(e[i].key, e[i].key + e[i].key_len),
                                    e[i].data_len, e[i].metadata_len,
                                    (e[i].flags & CIDCACHE_OBJECT_ARROW) != 0});
        cidcache_list_free(e, n);
        return out;
    }
    std::vector<std::pair<std::string, std::uint64_t>> stats() const {
        cidcache_stat* s = nullptr;
        std::size_t n = 0;
        detail::check(cidcache_stats(handle_, &s, &n));
        std::vector<std::pair<std::string, std::uint64_t>> out;
        out.reserve(n);
        for (std::size_t i = 0; i < n; i++) out.emplace_back(s[i].name, s[i].value);
        cidcache_stats_free(s, n);
        return out;
    }
    /// Objects this client pins now.
    std::size_t pinned() const {
        std::size_t n = 0;
        detail::check(cidcache_pinned(handle_, &n));
        return n;
    }

    /// Exports an Arrow object as a C stream, zero-copy; std::nullopt when missing.
    std::optional<ArrowStream> get_arrow(Key key) const {
        ArrowStream s;
        cidcache_status st = cidcache_get_arrow(handle_, key.data(), key.size(), s.get());
        if (st == CIDCACHE_NOT_FOUND) return std::nullopt;
        detail::check(st);
        return s;
    }
    /// Exports an object already obtained (get, get_many, AsyncGet) as an Arrow C stream,
    /// zero-copy. Takes the object whatever the result (its pin moves into the stream); an object
    /// not stored as Arrow throws CIDCACHE_NOT_ARROW.
    static ArrowStream object_to_arrow(Object&& object) {
        ArrowStream s;
        detail::check(cidcache_object_to_arrow(object.release(), s.get()));
        return s;
    }
    /// Stores an Arrow C stream as an Arrow object; the stream is consumed (moved in).
    void put_arrow(Key key, ArrowArrayStream* stream) const {
        detail::check(cidcache_put_arrow(handle_, key.data(), key.size(), stream));
    }

private:
    explicit Client(cidcache_client* h) noexcept : handle_(h) {}
    cidcache_client* handle_ = nullptr;
};

/// CID text <-> binary.
namespace cid {
/// Parses a text CID (v0 or v1) into binary. Throws CIDCACHE_INVALID_KEY.
inline std::vector<std::uint8_t> parse(const std::string& text) {
    std::vector<std::uint8_t> out(CIDCACHE_MAX_KEY_LEN);
    std::size_t n = 0;
    detail::check(cidcache_cid_parse(text.c_str(), out.data(), out.size(), &n));
    out.resize(n);
    return out;
}
/// Formats a binary CID as text. Throws CIDCACHE_INVALID_KEY for bytes that are not a CID.
inline std::string format(bytes_view bin) {
    std::string out(128, '\0');
    std::size_t n = 0;
    cidcache_status s = cidcache_cid_format(bin.data(), bin.size(), out.data(), out.size(), &n);
    if (s == CIDCACHE_INVALID_ARGUMENT && n + 1 > out.size()) {
        out.resize(n + 1);
        s = cidcache_cid_format(bin.data(), bin.size(), out.data(), out.size(), &n);
    }
    detail::check(s);
    out.resize(n);
    return out;
}
/// The CIDv1 (raw, sha2-256) of `data`.
inline std::vector<std::uint8_t> compute(bytes_view data) {
    std::vector<std::uint8_t> out(CIDCACHE_CID_V1_RAW_LEN);
    std::size_t n = 0;
    detail::check(cidcache_cid_compute(data.data(), data.size(), out.data(), out.size(), &n));
    out.resize(n);
    return out;
}
}  // namespace cid

}  // namespace cidcache

#endif  // CIDCACHE_HPP
