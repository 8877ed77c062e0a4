// C++ test of include/cidcache.hpp against a real cidcached (CIDCACHE_SOCKET, CIDCACHE_STORE).
// Built as C++17 with -Wall -Wextra -Werror; prints a closing "N passed, N failed" line.
#include "cidcache.hpp"

#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>

static int passed, failed;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            passed++;                                                                \
        } else {                                                                     \
            failed++;                                                                \
            std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                            \
    } while (0)

#define CHECK_THROWS(expr, want)                                                     \
    do {                                                                             \
        try {                                                                        \
            (void)(expr);                                                            \
            failed++;                                                                \
            std::fprintf(stderr, "FAIL %s:%d: %s did not throw\n", __FILE__, __LINE__, #expr); \
        } catch (const cidcache::Error& e) {                                         \
            if (e.status() == (want)) {                                              \
                passed++;                                                            \
            } else {                                                                 \
                failed++;                                                            \
                std::fprintf(stderr, "FAIL %s:%d: %s threw %s (%s)\n", __FILE__, __LINE__, #expr, \
                             e.status_name(), e.what());                             \
            }                                                                        \
        }                                                                            \
    } while (0)

static std::string key(const char* label) {
    static int n;
    return "cpp-" + std::to_string(getpid()) + "-" + std::to_string(n++) + "-" + label;
}

// A minimal Arrow C stream producer: `batches` batches of one int64 column "x" (5 rows each,
// values b*100+i), each array owning its values.
namespace producer {
struct State {
    int next = 0;
    int batches = 0;
};
void release_child_schema(ArrowSchema* s) { s->release = nullptr; }
void release_schema(ArrowSchema* s) {
    for (int64_t i = 0; i < s->n_children; i++) {
        if (s->children[i]->release) s->children[i]->release(s->children[i]);
        delete s->children[i];
    }
    delete[] s->children;
    s->release = nullptr;
}
int get_schema(ArrowArrayStream*, ArrowSchema* out) {
    auto* child = new ArrowSchema{};
    child->format = "l";
    child->name = "x";
    child->flags = ARROW_FLAG_NULLABLE;
    child->release = release_child_schema;
    *out = ArrowSchema{};
    out->format = "+s";
    out->name = "";
    out->n_children = 1;
    out->children = new ArrowSchema*[1]{child};
    out->release = release_schema;
    return 0;
}
void release_array(ArrowArray* a) {
    for (int64_t i = 0; i < a->n_children; i++) {
        if (a->children[i]->release) a->children[i]->release(a->children[i]);
        delete a->children[i];
    }
    delete[] a->children;
    delete[] a->buffers;
    delete[] static_cast<int64_t*>(a->private_data);
    a->release = nullptr;
}
int get_next(ArrowArrayStream* st, ArrowArray* out) {
    auto* p = static_cast<State*>(st->private_data);
    *out = ArrowArray{};
    if (p->next >= p->batches) return 0;
    auto* vals = new int64_t[5];
    for (int i = 0; i < 5; i++) vals[i] = p->next * 100 + i;
    auto* child = new ArrowArray{};
    child->length = 5;
    child->n_buffers = 2;
    child->buffers = new const void*[2]{nullptr, vals};
    child->private_data = vals;
    child->release = release_array;
    out->length = 5;
    out->n_buffers = 1;
    out->buffers = new const void*[1]{nullptr};
    out->n_children = 1;
    out->children = new ArrowArray*[1]{child};
    out->release = release_array;
    p->next++;
    return 0;
}
const char* last_error(ArrowArrayStream*) { return nullptr; }
void release(ArrowArrayStream* st) {
    delete static_cast<State*>(st->private_data);
    st->release = nullptr;
}
ArrowArrayStream make(int batches) {
    ArrowArrayStream s{};
    s.get_schema = get_schema;
    s.get_next = get_next;
    s.get_last_error = last_error;
    s.release = release;
    s.private_data = new State{0, batches};
    return s;
}
}  // namespace producer

// Key owns its bytes: built from a temporary, or from a string changed afterwards, it keeps
// the bytes it was given.
static_assert(std::is_copy_constructible_v<cidcache::Key>, "Key is a value");

static_assert(!std::is_copy_constructible_v<cidcache::Object>, "Object is move-only");
static_assert(std::is_nothrow_move_constructible_v<cidcache::Object>, "Object moves");
static_assert(!std::is_copy_constructible_v<cidcache::Client>, "Client is move-only");

int main() {
    const char* sock = std::getenv("CIDCACHE_SOCKET");
    if (!sock) {
        std::fprintf(stderr, "set CIDCACHE_SOCKET\n");
        return 2;
    }
    try {
        CHECK_THROWS(cidcache::Client::connect_socket("/nonexistent/x.sock"), CIDCACHE_NOT_RUNNING);
        auto client = cidcache::Client::connect_socket(sock);

        // put / get / views / move semantics / release
        std::string k = key("basic");
        client.put(k, "hello from C++");
        CHECK_THROWS(client.put(k, "again"), CIDCACHE_ALREADY_EXISTS);
        {
            auto o = client.get(k);
            CHECK(o.has_value());
            CHECK(o->str() == "hello from C++");
            CHECK(o->data().size() == 14 && o->data()[0] == 'h');
            CHECK(!o->is_arrow());
            CHECK(client.pinned() == 1);
            cidcache::Object moved = std::move(*o);
            CHECK(!*o && moved && moved.str() == "hello from C++");
            CHECK(client.pinned() == 1);
        }
        CHECK(client.pinned() == 0);
        CHECK(!client.get(key("missing")).has_value());
        CHECK(client.contains(k));
        client.remove(k);
        CHECK(!client.contains(k));
        CHECK_THROWS(client.remove(k), CIDCACHE_NOT_FOUND);
        CHECK_THROWS(client.get(std::string(70, 'x')), CIDCACHE_INVALID_KEY);

        // metadata
        std::string km = key("meta");
        std::string meta = "m!";
        client.put(km, cidcache::bytes_view(reinterpret_cast<const std::uint8_t*>("dd"), 2),
                   cidcache::bytes_view(reinterpret_cast<const std::uint8_t*>(meta.data()), meta.size()));
        {
            auto o = client.get(km);
            CHECK(o && o->metadata().size() == 2 && o->metadata()[1] == '!');
        }

        // create / seal, and a writer destroyed unsealed is aborted
        std::string kc = key("create");
        {
            auto w = client.create(kc, 256, 4);
            auto d = w.data();
            CHECK(d.size() == 256);
            for (std::size_t i = 0; i < d.size(); i++) d[i] = static_cast<std::uint8_t>(i);
            std::memcpy(w.metadata().data(), "meta", 4);
            w.seal();
        }
        {
            auto o = client.get(kc);
            CHECK(o && o->size() == 256 && o->data()[255] == 255 && o->metadata()[0] == 'm');
        }
        std::string ka = key("aborted");
        { auto w = client.create(ka, 16); }
        CHECK(!client.get(ka));
        client.put(ka, "reusable");

        // batches
        std::vector<std::string> ks = {key("b0"), key("b1"), key("b2")};
        std::string v0 = "zero", v1 = "one", v2 = "two";
        auto bv = [](const std::string& s) {
            return cidcache::bytes_view(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
        };
        auto st = client.put_many({{cidcache::Key(ks[0]), bv(v0)}, {cidcache::Key(ks[1]), bv(v1)}});
        CHECK(st.size() == 2 && st[0] == CIDCACHE_OK && st[1] == CIDCACHE_OK);
        st = client.put_many({{cidcache::Key(ks[0]), bv(v0)}, {cidcache::Key(ks[2]), bv(v2)}});
        CHECK(st[0] == CIDCACHE_ALREADY_EXISTS && st[1] == CIDCACHE_OK);
        {
            std::string absent = key("absent");
            auto got = client.get_many({ks[0], ks[1], ks[2], absent});
            CHECK(got.size() == 4 && got[0] && got[1] && got[2] && !got[3]);
            CHECK(got[1]->str() == "one" && got[2]->str() == "two");
            std::vector<cidcache::Status> sts;
            auto got2 = client.get_many({ks[0], std::string(70, 'y')}, std::chrono::milliseconds(0), &sts);
            CHECK(sts.size() == 2 && sts[0] == CIDCACHE_OK && sts[1] == CIDCACHE_INVALID_KEY);
            CHECK_THROWS(client.get_many({ks[0], std::string(70, 'y')}), CIDCACHE_INVALID_KEY);
        }
        CHECK(client.pinned() == 0);

        // waits, async get with poll(), across threads
        CHECK(!client.get(key("never"), std::chrono::milliseconds(30)));
        {
            // An expired wait is a miss in C++ too, in batches and asynchronous gets alike.
            std::vector<cidcache::Status> sts;
            auto got = client.get_many({key("never-many")}, std::chrono::milliseconds(30), &sts);
            CHECK(got.size() == 1 && !got[0] && sts[0] == CIDCACHE_TIMEOUT);
            CHECK(!client.get_many({key("never-many")}, std::chrono::milliseconds(30))[0]);
            auto op = client.get_async(key("never-async"), std::chrono::milliseconds(30));
            pollfd p{op.fd(), POLLIN, 0};
            CHECK(::poll(&p, 1, 10000) == 1);
            CHECK(!op.result());
        }
        std::string kl = key("late");
        std::thread t([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            auto c2 = cidcache::Client::connect_socket(sock);
            c2.put(kl, "late");
        });
        {
            auto op = client.get_async(kl, std::chrono::milliseconds(10000));
            pollfd p{op.fd(), POLLIN, 0};
            CHECK(::poll(&p, 1, 10000) == 1);
            CHECK(op.ready());
            auto o = op.result();
            CHECK(o && o->str() == "late");
            CHECK_THROWS(op.result(), CIDCACHE_INVALID_ARGUMENT);
        }
        t.join();
        {
            auto o = client.get(kl, std::chrono::milliseconds(-1));
            CHECK(o && o->str() == "late");
        }

        // list / stats / cid
        bool listed = false;
        for (const auto& e : client.list())
            if (std::string(e.key.begin(), e.key.end()) == kl) listed = e.data_len == 4;
        CHECK(listed);
        CHECK(!client.stats().empty());
        auto bin = cidcache::cid::parse("bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
        CHECK(bin.size() == CIDCACHE_CID_V1_RAW_LEN);
        CHECK(cidcache::cid::format(bin) == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
        std::string hw = "hello world";
        CHECK(cidcache::cid::compute(bv(hw)) == bin);
        CHECK_THROWS(cidcache::cid::parse("nope"), CIDCACHE_INVALID_KEY);
        std::string content = "c++ content " + std::to_string(getpid());
        auto cid = client.put_content(bv(content));
        {
            auto o = client.get(cid);
            CHECK(o && o->str() == content);
        }
        CHECK(cidcache::cid::format(cid).rfind("b", 0) == 0);

        // Arrow: a missing key, and an error message that carries the status
        CHECK(!client.get_arrow(key("no-arrow")).has_value());
        try {
            (void)client.get_arrow(kl);
            CHECK(false);
        } catch (const cidcache::Error& e) {
            CHECK(e.status() == CIDCACHE_NOT_ARROW);
            CHECK(std::string(e.what()).find("not stored as an Arrow object") != std::string::npos);
        }

        // Arrow through the C++ reader interface.
        {
            std::string ka = key("arrow");
            auto in = producer::make(3);
            client.put_arrow(ka, &in);
            CHECK(in.release == nullptr);
            auto s = client.get_arrow(ka);
            CHECK(s.has_value() && *s);
            auto schema = s->schema();
            CHECK(std::string(schema->format) == "+s" && schema->n_children == 1);
            CHECK(std::string(schema->children[0]->name) == "x");
            std::vector<cidcache::ArrowBatch> batches;
            while (auto b = s->next()) batches.push_back(std::move(*b));
            CHECK(batches.size() == 3);
            for (std::size_t b = 0; b < batches.size(); b++) {
                CHECK(batches[b].length() == 5);
                auto* vals = static_cast<const int64_t*>(batches[b]->children[0]->buffers[1]);
                CHECK(vals[0] == static_cast<int64_t>(b) * 100 && vals[4] == static_cast<int64_t>(b) * 100 + 4);
            }
            CHECK(!s->next().has_value());  // stays at the end
            batches.clear();
            CHECK(client.pinned() == 1);  // the stream, read to its end, still pins
            s.reset();
            CHECK(client.pinned() == 0);

            // object_to_arrow: from an object obtained by get; the object is taken.
            auto o = client.get(ka);
            CHECK(o && o->is_arrow());
            auto s2 = cidcache::Client::object_to_arrow(std::move(*o));
            CHECK(!*o && s2);
            int rows = 0;
            while (auto b = s2.next()) rows += static_cast<int>(b->length());
            CHECK(rows == 15);
            s2.reset();
            CHECK(client.pinned() == 0);
            CHECK_THROWS(s2.next(), CIDCACHE_INVALID_ARGUMENT);
            auto raw = client.get(kl);
            CHECK_THROWS(cidcache::Client::object_to_arrow(std::move(*raw)), CIDCACHE_NOT_ARROW);
            CHECK(client.pinned() == 0);
            CHECK_THROWS(cidcache::Client::object_to_arrow(cidcache::Object()), CIDCACHE_INVALID_ARGUMENT);
        }

        // Key owns its bytes.
        {
            std::string text = key("owned");
            cidcache::Key k1(text);
            cidcache::Key k2 = std::string(text);  // from a temporary
            std::vector<std::uint8_t> bytes(text.begin(), text.end());
            cidcache::Key k3(bytes);
            client.put(k1, "owned");
            text[0] = 'X';
            bytes[0] = 'Y';
            bytes.clear();
            bytes.shrink_to_fit();
            CHECK(k1.size() == k2.size() && std::memcmp(k1.data(), k2.data(), k1.size()) == 0);
            CHECK(k1.data()[0] == 'c' && k3.data()[0] == 'c');
            auto o1 = client.get(k1);
            auto o3 = client.get(k3);
            CHECK(o1 && o1->str() == "owned" && o3 && o3->str() == "owned");
            cidcache::Key copy = k3;
            k3 = cidcache::Key("other");
            CHECK(client.get(copy).has_value());
            CHECK(k3.size() == 5 && std::memcmp(k3.data(), "other", 5) == 0);
        }

        // Concurrent readers on one client.
        std::string ks2 = key("threads");
        client.put(ks2, "shared");
        std::vector<std::thread> readers;
        int bad = 0;
        for (int i = 0; i < 4; i++)
            readers.emplace_back([&] {
                for (int j = 0; j < 1000; j++) {
                    auto o = client.get(ks2);
                    if (!o || o->str() != "shared") __atomic_add_fetch(&bad, 1, __ATOMIC_RELAXED);
                }
            });
        for (auto& r : readers) r.join();
        CHECK(bad == 0);
        CHECK(client.pinned() == 0);
    } catch (const std::exception& e) {
        failed++;
        std::fprintf(stderr, "FAIL: unexpected exception: %s\n", e.what());
    }
    std::printf("cpp: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
