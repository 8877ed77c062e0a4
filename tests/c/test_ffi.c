/*
 * C test of the cidcache C ABI, run against a real cidcached (tests/run-ffi-tests.sh starts one
 * and passes its socket in CIDCACHE_SOCKET and its store name in CIDCACHE_STORE).
 *
 * Built as C11 with -Wall -Wextra -Werror, linked dynamically and statically, and run under
 * valgrind. Prints one line per failed check and a closing "N passed, N failed" line.
 */
#define _GNU_SOURCE
#include "cidcache.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (cond) {                                                                              \
            passed++;                                                                            \
        } else {                                                                                 \
            failed++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond,     \
                    cidcache_last_error());                                                      \
        }                                                                                        \
    } while (0)

#define CHECK_STATUS(expr, want)                                                                 \
    do {                                                                                         \
        cidcache_status s_ = (expr);                                                             \
        if (s_ == (want)) {                                                                      \
            passed++;                                                                            \
        } else {                                                                                 \
            failed++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: %s returned %s, expected %s (last error: %s)\n",        \
                    __FILE__, __LINE__, #expr, cidcache_status_name(s_),                         \
                    cidcache_status_name(want), cidcache_last_error());                          \
        }                                                                                        \
    } while (0)

static const char *socket_path;
static const char *store_name;

/* A unique key per test run and label, so that reruns against one daemon never collide. */
static size_t make_key(uint8_t *out, const char *label) {
    static unsigned counter;
    int n = snprintf((char *)out, CIDCACHE_MAX_KEY_LEN + 1, "c-%d-%u-%s", (int)getpid(),
                     counter++, label);
    return (size_t)n > CIDCACHE_MAX_KEY_LEN ? CIDCACHE_MAX_KEY_LEN : (size_t)n;
}

static size_t pinned(const cidcache_client *c) {
    size_t n = 999;
    CHECK_STATUS(cidcache_pinned(c, &n), CIDCACHE_OK);
    return n;
}

/* Whether [p, p+len) lies inside one of this process's mappings of the store's data segments
 * (/dev/shm/cidcache.<store>.d<N>). */
static int in_shared_mapping(const void *p, size_t len) {
    char prefix[256];
    snprintf(prefix, sizeof prefix, "/dev/shm/cidcache.%s.d", store_name);
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[1024];
    int found = 0;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        uintptr_t lo, hi;
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) != 2) continue;
        const char *path = strchr(line, '/');
        if (!path || strncmp(path, prefix, strlen(prefix)) != 0) continue;
        if (a >= lo && a + len <= hi) {
            found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}

static void test_errors(void) {
    cidcache_client *c = (cidcache_client *)1;
    CHECK_STATUS(cidcache_connect(NULL, NULL, 0, NULL), CIDCACHE_INVALID_ARGUMENT);
    CHECK(strstr(cidcache_last_error(), "out is NULL") != NULL);
    /* No daemon: no socket at all, or a socket file nobody listens on (a crashed daemon's). */
    CHECK_STATUS(cidcache_connect("/nonexistent/cidcache.sock", NULL, 0, &c),
                 CIDCACHE_NOT_RUNNING);
    CHECK(c == NULL);
    CHECK(strstr(cidcache_last_error(), "/nonexistent/cidcache.sock") != NULL);
    {
        char dir[] = "/tmp/cidcache-c-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s/dead.sock", dir);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
        close(fd);
        CHECK_STATUS(cidcache_connect(sa.sun_path, NULL, 0, &c), CIDCACHE_NOT_RUNNING);
        CHECK(c == NULL);
        unlink(sa.sun_path);
        rmdir(dir);
    }
    CHECK_STATUS(cidcache_connect(socket_path, NULL, 0x80, &c), CIDCACHE_INVALID_ARGUMENT);
    CHECK(strcmp(cidcache_status_name(CIDCACHE_NOT_FOUND), "CIDCACHE_NOT_FOUND") == 0);
    CHECK(strcmp(cidcache_status_name(12345), "CIDCACHE_UNKNOWN") == 0);
    CHECK(strlen(cidcache_version()) > 0);
    /* NULL handles and arguments. */
    cidcache_object *o = (cidcache_object *)1;
    CHECK_STATUS(cidcache_get(NULL, (const uint8_t *)"k", 1, &o, NULL), CIDCACHE_INVALID_ARGUMENT);
    CHECK(o == NULL);
    CHECK_STATUS(cidcache_put(NULL, (const uint8_t *)"k", 1, NULL, 0), CIDCACHE_INVALID_ARGUMENT);
    cidcache_release(NULL);
    cidcache_disconnect(NULL);
    CHECK_STATUS(cidcache_abort(NULL), CIDCACHE_OK);
    CHECK_STATUS(cidcache_seal(NULL), CIDCACHE_INVALID_ARGUMENT);
    cidcache_list_free(NULL, 0);
    cidcache_stats_free(NULL, 0);
    cidcache_get_op_free(NULL);
    CHECK(cidcache_get_op_fd(NULL) == -1);
}

static void test_put_get(cidcache_client *c) {
    uint8_t key[64];
    size_t klen = make_key(key, "basic");
    const char *data = "hello, shared memory";
    CHECK_STATUS(cidcache_put(c, key, klen, (const uint8_t *)data, strlen(data)), CIDCACHE_OK);
    CHECK_STATUS(cidcache_put(c, key, klen, (const uint8_t *)data, strlen(data)),
                 CIDCACHE_ALREADY_EXISTS);

    cidcache_object *o = NULL;
    cidcache_view v;
    memset(&v, 0, sizeof v);
    CHECK_STATUS(cidcache_get(c, key, klen, &o, &v), CIDCACHE_OK);
    CHECK(o != NULL);
    CHECK(v.data_len == strlen(data));
    CHECK(v.data && memcmp(v.data, data, v.data_len) == 0);
    CHECK(v.metadata_len == 0);
    CHECK(v.flags == 0);
    CHECK(((uintptr_t)v.data % 64) == 0);
    CHECK(in_shared_mapping(v.data, v.data_len));
    CHECK(pinned(c) == 1);
    cidcache_view v2;
    CHECK_STATUS(cidcache_object_view(o, &v2), CIDCACHE_OK);
    CHECK(v2.data == v.data && v2.data_len == v.data_len);

    /* The pinned bytes stay readable after a delete, until released. */
    CHECK_STATUS(cidcache_delete(c, key, klen), CIDCACHE_OK);
    CHECK(memcmp(v.data, data, v.data_len) == 0);
    cidcache_release(o);
    CHECK(pinned(c) == 0);

    o = (cidcache_object *)1;
    CHECK_STATUS(cidcache_get(c, key, klen, &o, NULL), CIDCACHE_NOT_FOUND);
    CHECK(o == NULL);
    CHECK(strstr(cidcache_last_error(), "not found") != NULL);
    CHECK_STATUS(cidcache_delete(c, key, klen), CIDCACHE_NOT_FOUND);

    /* Invalid keys. */
    uint8_t big[80] = {0};
    CHECK_STATUS(cidcache_get(c, big, sizeof big, &o, NULL), CIDCACHE_INVALID_KEY);
    CHECK_STATUS(cidcache_put(c, NULL, 0, (const uint8_t *)"x", 1), CIDCACHE_INVALID_KEY);
    CHECK_STATUS(cidcache_put(c, NULL, 3, (const uint8_t *)"x", 1), CIDCACHE_INVALID_ARGUMENT);

    /* Metadata, flags, and a large object (created and sealed, not inline). */
    klen = make_key(key, "meta");
    CHECK_STATUS(cidcache_put_ex(c, key, klen, (const uint8_t *)"d", 1, (const uint8_t *)"mm", 2,
                                 CIDCACHE_PUT_EPHEMERAL),
                 CIDCACHE_OK);
    CHECK_STATUS(cidcache_get(c, key, klen, &o, &v), CIDCACHE_OK);
    CHECK(v.data_len == 1 && v.metadata_len == 2 && memcmp(v.metadata, "mm", 2) == 0);
    cidcache_release(o);
    CHECK_STATUS(cidcache_put_ex(c, key, klen, NULL, 0, NULL, 0, 0x100), CIDCACHE_INVALID_ARGUMENT);

    size_t n = 3u << 20;
    uint8_t *big_data = malloc(n);
    for (size_t i = 0; i < n; i++) big_data[i] = (uint8_t)(i * 31);
    klen = make_key(key, "large");
    CHECK_STATUS(cidcache_put(c, key, klen, big_data, n), CIDCACHE_OK);
    CHECK_STATUS(cidcache_get(c, key, klen, &o, &v), CIDCACHE_OK);
    CHECK(v.data_len == n && memcmp(v.data, big_data, n) == 0);
    cidcache_release(o);
    free(big_data);

    bool has = false;
    CHECK_STATUS(cidcache_contains(c, key, klen, &has), CIDCACHE_OK);
    CHECK(has);
    klen = make_key(key, "absent");
    CHECK_STATUS(cidcache_contains(c, key, klen, &has), CIDCACHE_OK);
    CHECK(!has);
    CHECK_STATUS(cidcache_contains(c, key, klen, NULL), CIDCACHE_INVALID_ARGUMENT);
}

static void test_create_seal(cidcache_client *c) {
    uint8_t key[64];
    size_t klen = make_key(key, "create");
    cidcache_writer *w = NULL;
    CHECK_STATUS(cidcache_create(c, key, klen, 1000, 10, &w), CIDCACHE_OK);
    size_t dlen = 0, mlen = 0;
    uint8_t *d = cidcache_writer_data(w, &dlen);
    uint8_t *m = cidcache_writer_metadata(w, &mlen);
    CHECK(d != NULL && dlen == 1000 && m != NULL && mlen == 10);
    if (d && m) {
        memset(d, 0xab, dlen);
        memset(m, 0xcd, mlen);
    }
    /* Not visible before seal. */
    cidcache_object *o = NULL;
    CHECK(cidcache_get(c, key, klen, &o, NULL) != CIDCACHE_OK);
    CHECK_STATUS(cidcache_seal(w), CIDCACHE_OK);
    cidcache_view v;
    CHECK_STATUS(cidcache_get(c, key, klen, &o, &v), CIDCACHE_OK);
    CHECK(v.data_len == 1000 && v.data[999] == 0xab && v.metadata[9] == 0xcd);
    cidcache_release(o);

    klen = make_key(key, "aborted");
    CHECK_STATUS(cidcache_create(c, key, klen, 100, 0, &w), CIDCACHE_OK);
    CHECK_STATUS(cidcache_abort(w), CIDCACHE_OK);
    CHECK_STATUS(cidcache_get(c, key, klen, &o, NULL), CIDCACHE_NOT_FOUND);
    /* The key is free again after an abort. */
    CHECK_STATUS(cidcache_put(c, key, klen, (const uint8_t *)"z", 1), CIDCACHE_OK);
    CHECK(cidcache_writer_data(NULL, NULL) == NULL);
}

static void test_batches(cidcache_client *c) {
    enum { N = 6 };
    uint8_t keys[N][64];
    size_t lens[N];
    char vals[N][32];
    cidcache_put_item items[N];
    for (int i = 0; i < N; i++) {
        lens[i] = make_key(keys[i], "batch");
        snprintf(vals[i], sizeof vals[i], "value %d", i);
        items[i].key = keys[i];
        items[i].key_len = lens[i];
        items[i].data = (const uint8_t *)vals[i];
        items[i].data_len = strlen(vals[i]);
    }
    /* Item 5 is invalid (empty key): partial success. */
    items[5].key_len = 0;
    cidcache_status st[N];
    CHECK_STATUS(cidcache_put_many(c, items, N, st), CIDCACHE_INVALID_KEY);
    for (int i = 0; i < 5; i++) CHECK(st[i] == CIDCACHE_OK);
    CHECK(st[5] == CIDCACHE_INVALID_KEY);
    /* Putting again: already exists, item by item. */
    CHECK_STATUS(cidcache_put_many(c, items, 2, st), CIDCACHE_ALREADY_EXISTS);
    CHECK(st[0] == CIDCACHE_ALREADY_EXISTS && st[1] == CIDCACHE_ALREADY_EXISTS);
    /* Each failed item has its own message, until the next batch call on this thread. */
    CHECK(strstr(cidcache_item_error(0), "items[0]") != NULL);
    CHECK(strstr(cidcache_item_error(1), "items[1]: ") != NULL);
    CHECK(strstr(cidcache_item_error(1), "already") != NULL);
    CHECK(strcmp(cidcache_item_error(2), "") == 0);
    CHECK(strcmp(cidcache_item_error((size_t)-1), "") == 0);

    cidcache_key ks[N];
    for (int i = 0; i < N; i++) {
        ks[i].ptr = keys[i];
        ks[i].len = lens[i];
    }
    /* keys[5] was never stored. */
    cidcache_object *objs[N];
    cidcache_view views[N];
    CHECK_STATUS(cidcache_get_many(c, ks, N, 0, objs, views, st), CIDCACHE_NOT_FOUND);
    for (int i = 0; i < 5; i++) {
        CHECK(st[i] == CIDCACHE_OK && objs[i] != NULL);
        CHECK(views[i].data_len == strlen(vals[i]) &&
              memcmp(views[i].data, vals[i], views[i].data_len) == 0);
    }
    CHECK(st[5] == CIDCACHE_NOT_FOUND && objs[5] == NULL);
    CHECK(pinned(c) == 5);
    for (int i = 0; i < N; i++) cidcache_release(objs[i]);
    CHECK(pinned(c) == 0);
    CHECK_STATUS(cidcache_get_many(c, ks, 5, 100, objs, NULL, st), CIDCACHE_OK);
    for (int i = 0; i < 5; i++) cidcache_release(objs[i]);
    CHECK_STATUS(cidcache_get_many(c, ks, 0, 0, NULL, NULL, NULL), CIDCACHE_OK);
    CHECK_STATUS(cidcache_get_many(c, NULL, 2, 0, objs, NULL, st), CIDCACHE_INVALID_ARGUMENT);
}

static void test_list_stats(cidcache_client *c) {
    uint8_t key[64];
    size_t klen = make_key(key, "listed");
    CHECK_STATUS(cidcache_put(c, key, klen, (const uint8_t *)"abc", 3), CIDCACHE_OK);
    cidcache_list_entry *entries = NULL;
    size_t n = 0;
    CHECK_STATUS(cidcache_list(c, &entries, &n), CIDCACHE_OK);
    int seen = 0;
    for (size_t i = 0; i < n; i++)
        if (entries[i].key_len == klen && memcmp(entries[i].key, key, klen) == 0 &&
            entries[i].data_len == 3)
            seen = 1;
    CHECK(seen);
    cidcache_list_free(entries, n);

    cidcache_stat *stats = NULL;
    CHECK_STATUS(cidcache_stats(c, &stats, &n), CIDCACHE_OK);
    CHECK(n > 0 && stats != NULL && stats[0].name != NULL && strlen(stats[0].name) > 0);
    cidcache_stats_free(stats, n);
}

static void test_cid(cidcache_client *c) {
    const char *text = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
    uint8_t bin[CIDCACHE_MAX_KEY_LEN];
    size_t blen = 0;
    CHECK_STATUS(cidcache_cid_parse(text, bin, sizeof bin, &blen), CIDCACHE_OK);
    CHECK(blen == CIDCACHE_CID_V1_RAW_LEN);
    uint8_t computed[CIDCACHE_CID_V1_RAW_LEN];
    size_t clen = 0;
    CHECK_STATUS(cidcache_cid_compute((const uint8_t *)"hello world", 11, computed,
                                      sizeof computed, &clen),
                 CIDCACHE_OK);
    CHECK(clen == blen && memcmp(computed, bin, blen) == 0);
    char out[128];
    size_t tlen = 0;
    CHECK_STATUS(cidcache_cid_format(bin, blen, out, sizeof out, &tlen), CIDCACHE_OK);
    CHECK(tlen == strlen(text) && strcmp(out, text) == 0);
    /* Too small a buffer: the length needed, without the NUL, as the header says. */
    tlen = 0;
    CHECK_STATUS(cidcache_cid_format(bin, blen, out, 10, &tlen), CIDCACHE_INVALID_ARGUMENT);
    CHECK(tlen == strlen(text));
    CHECK_STATUS(cidcache_cid_format(bin, blen, out, strlen(text), &tlen),
                 CIDCACHE_INVALID_ARGUMENT);
    CHECK(tlen == strlen(text));
    CHECK_STATUS(cidcache_cid_parse("not a cid", bin, sizeof bin, &blen), CIDCACHE_INVALID_KEY);
    CHECK_STATUS(cidcache_cid_format((const uint8_t *)"xx", 2, out, sizeof out, NULL),
                 CIDCACHE_INVALID_KEY);
    CHECK_STATUS(cidcache_cid_parse("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", bin,
                                    sizeof bin, &blen),
                 CIDCACHE_OK);
    CHECK(blen == 34);

    /* put_content: stored under its CID, idempotent. */
    char content[64];
    snprintf(content, sizeof content, "content of pid %d", (int)getpid());
    uint8_t cid[CIDCACHE_CID_V1_RAW_LEN];
    size_t cid_len = 0;
    CHECK_STATUS(cidcache_put_content(c, (const uint8_t *)content, strlen(content), cid,
                                      sizeof cid, &cid_len),
                 CIDCACHE_OK);
    CHECK(cid_len == CIDCACHE_CID_V1_RAW_LEN);
    CHECK_STATUS(cidcache_put_content(c, (const uint8_t *)content, strlen(content), cid,
                                      sizeof cid, &cid_len),
                 CIDCACHE_OK);
    cidcache_object *o = NULL;
    cidcache_view v;
    CHECK_STATUS(cidcache_get(c, cid, cid_len, &o, &v), CIDCACHE_OK);
    CHECK(v.data_len == strlen(content) && memcmp(v.data, content, v.data_len) == 0);
    cidcache_release(o);
    CHECK_STATUS(cidcache_put_content(c, (const uint8_t *)content, 3, cid, 8, &cid_len),
                 CIDCACHE_INVALID_ARGUMENT);
    /* A verified put under the wrong CID is refused. */
    CHECK_STATUS(cidcache_put_ex(c, computed, clen, (const uint8_t *)"not hello", 9, NULL, 0,
                                 CIDCACHE_PUT_VERIFY_CID),
                 CIDCACHE_CID_MISMATCH);
    /* CID_MISMATCH takes precedence over ALREADY_EXISTS, for an inline put and for a large
     * one (created, written in place, sealed) alike. */
    CHECK_STATUS(cidcache_put_content(c, (const uint8_t *)"hello world", 11, cid, sizeof cid,
                                      &cid_len),
                 CIDCACHE_OK);
    CHECK(cid_len == clen && memcmp(cid, computed, clen) == 0);
    CHECK_STATUS(cidcache_put_ex(c, computed, clen, (const uint8_t *)"not hello", 9, NULL, 0,
                                 CIDCACHE_PUT_VERIFY_CID),
                 CIDCACHE_CID_MISMATCH);
    size_t big = 256 << 10;
    uint8_t *wrong = calloc(big, 1);
    CHECK_STATUS(cidcache_put_ex(c, computed, clen, wrong, big, NULL, 0, CIDCACHE_PUT_VERIFY_CID),
                 CIDCACHE_CID_MISMATCH);
    /* Without verification, the existing key is what is reported. */
    CHECK_STATUS(cidcache_put_ex(c, computed, clen, wrong, big, NULL, 0, 0),
                 CIDCACHE_ALREADY_EXISTS);
    free(wrong);
}

/* cidcache_connect(NULL, NULL) connects to $CIDCACHE_STORE, as cidcached and cidcache do: the
 * store's default socket path (under $XDG_RUNTIME_DIR) is made a link to the test daemon's. */
static void test_connect_env_store(void) {
    char dir[] = "/tmp/cidcache-c-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char sub[300], link[400];
    snprintf(sub, sizeof sub, "%s/cidcache", dir);
    CHECK(mkdir(sub, 0700) == 0);
    char name[64];
    snprintf(name, sizeof name, "cenv%d", (int)getpid());
    snprintf(link, sizeof link, "%s/%s.sock", sub, name);
    CHECK(symlink(socket_path, link) == 0);
    char *old_xdg = getenv("XDG_RUNTIME_DIR") ? strdup(getenv("XDG_RUNTIME_DIR")) : NULL;
    setenv("XDG_RUNTIME_DIR", dir, 1);
    setenv("CIDCACHE_STORE", name, 1);
    cidcache_client *c = NULL;
    CHECK_STATUS(cidcache_connect(NULL, NULL, 0, &c), CIDCACHE_OK);
    if (c) {
        uint8_t key[64];
        size_t klen = make_key(key, "env");
        CHECK_STATUS(cidcache_put(c, key, klen, (const uint8_t *)"e", 1), CIDCACHE_OK);
        cidcache_disconnect(c);
    }
    /* An explicit store name still wins; an unknown one is not running. */
    CHECK_STATUS(cidcache_connect(NULL, "no-such-store-here", 0, &c), CIDCACHE_NOT_RUNNING);
    CHECK(strstr(cidcache_last_error(), "no-such-store-here") != NULL);
    setenv("CIDCACHE_STORE", store_name, 1);
    if (old_xdg) {
        setenv("XDG_RUNTIME_DIR", old_xdg, 1);
        free(old_xdg);
    } else {
        unsetenv("XDG_RUNTIME_DIR");
    }
    unlink(link);
    rmdir(sub);
    rmdir(dir);
}

struct delayed_put {
    const char *socket;
    uint8_t key[64];
    size_t klen;
    int delay_ms;
};

static void *delayed_put_thread(void *arg) {
    struct delayed_put *dp = arg;
    struct timespec ts = {dp->delay_ms / 1000, (long)(dp->delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    cidcache_client *c = NULL;
    if (cidcache_connect(dp->socket, NULL, 0, &c) == CIDCACHE_OK) {
        cidcache_put(c, dp->key, dp->klen, (const uint8_t *)"late", 4);
        cidcache_disconnect(c);
    }
    return NULL;
}

struct many_put {
    const char *socket;
    uint8_t keys[16][64];
    size_t klens[16];
};

static void *many_put_thread(void *arg) {
    struct many_put *mp = arg;
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    cidcache_client *c = NULL;
    if (cidcache_connect(mp->socket, NULL, 0, &c) == CIDCACHE_OK) {
        cidcache_put_item items[16];
        cidcache_status st[16];
        for (int i = 0; i < 16; i++) {
            items[i].key = mp->keys[i];
            items[i].key_len = mp->klens[i];
            items[i].data = (const uint8_t *)"many";
            items[i].data_len = 4;
        }
        cidcache_put_many(c, items, 16, st);
        cidcache_disconnect(c);
    }
    return NULL;
}

static void test_waits(cidcache_client *c) {
    uint8_t key[64];
    size_t klen = make_key(key, "never");
    cidcache_object *o = NULL;
    /* A wait that expires is a timeout; a get that does not wait finds nothing. */
    CHECK_STATUS(cidcache_get_timeout(c, key, klen, 50, &o, NULL), CIDCACHE_TIMEOUT);
    CHECK(o == NULL);
    CHECK(strstr(cidcache_last_error(), "timed out") != NULL);
    CHECK_STATUS(cidcache_get_timeout(c, key, klen, 0, &o, NULL), CIDCACHE_NOT_FOUND);
    CHECK(o == NULL);
    {
        cidcache_key k1 = {.ptr = key, .len = klen};
        cidcache_object *objs[1];
        cidcache_status st[1];
        CHECK_STATUS(cidcache_get_many(c, &k1, 1, 50, objs, NULL, st), CIDCACHE_TIMEOUT);
        CHECK(st[0] == CIDCACHE_TIMEOUT && objs[0] == NULL);
        CHECK(strstr(cidcache_last_error(), "keys[0]") != NULL);
    }

    /* A blocking get that another client satisfies. */
    struct delayed_put dp = {.socket = socket_path, .delay_ms = 150};
    dp.klen = make_key(dp.key, "late");
    pthread_t t;
    pthread_create(&t, NULL, delayed_put_thread, &dp);
    cidcache_view v;
    CHECK_STATUS(cidcache_get_timeout(c, dp.key, dp.klen, 10000, &o, &v), CIDCACHE_OK);
    CHECK(o && v.data_len == 4 && memcmp(v.data, "late", 4) == 0);
    cidcache_release(o);
    pthread_join(t, NULL);

    /* Asynchronous get of a hit: ready at once. */
    cidcache_get_op *op = NULL;
    CHECK_STATUS(cidcache_get_async(c, dp.key, dp.klen, 0, &op), CIDCACHE_OK);
    CHECK(cidcache_get_op_ready(op));
    struct pollfd pfd = {.fd = cidcache_get_op_fd(op), .events = POLLIN};
    CHECK(poll(&pfd, 1, 0) == 1);
    CHECK_STATUS(cidcache_get_op_result(op, &o, &v), CIDCACHE_OK);
    CHECK(v.data_len == 4);
    cidcache_release(o);
    CHECK_STATUS(cidcache_get_op_result(op, &o, &v), CIDCACHE_INVALID_ARGUMENT);
    cidcache_get_op_free(op);

    /* Asynchronous get of a miss satisfied later, waited for with poll(). */
    struct delayed_put dp2 = {.socket = socket_path, .delay_ms = 150};
    dp2.klen = make_key(dp2.key, "async");
    CHECK_STATUS(cidcache_get_async(c, dp2.key, dp2.klen, 10000, &op), CIDCACHE_OK);
    CHECK(!cidcache_get_op_ready(op));
    CHECK_STATUS(cidcache_get_op_result(op, &o, &v), CIDCACHE_INVALID_ARGUMENT);
    pthread_create(&t, NULL, delayed_put_thread, &dp2);
    pfd.fd = cidcache_get_op_fd(op);
    CHECK(pfd.fd >= 0);
    CHECK(poll(&pfd, 1, 10000) == 1 && (pfd.revents & POLLIN));
    CHECK(cidcache_get_op_ready(op));
    CHECK_STATUS(cidcache_get_op_result(op, &o, &v), CIDCACHE_OK);
    CHECK(o && v.data_len == 4 && memcmp(v.data, "late", 4) == 0);
    cidcache_release(o);
    cidcache_get_op_free(op);
    pthread_join(t, NULL);

    /* Asynchronous miss that times out. */
    klen = make_key(key, "async-timeout");
    CHECK_STATUS(cidcache_get_async(c, key, klen, 50, &op), CIDCACHE_OK);
    pfd.fd = cidcache_get_op_fd(op);
    CHECK(poll(&pfd, 1, 10000) == 1);
    CHECK_STATUS(cidcache_get_op_result(op, &o, &v), CIDCACHE_TIMEOUT);
    CHECK(strstr(cidcache_last_error(), "timed out") != NULL);
    cidcache_get_op_free(op);
    /* Without a wait, an asynchronous miss is not found. */
    CHECK_STATUS(cidcache_get_async(c, key, klen, 0, &op), CIDCACHE_OK);
    pfd.fd = cidcache_get_op_fd(op);
    CHECK(poll(&pfd, 1, 10000) == 1);
    CHECK_STATUS(cidcache_get_op_result(op, &o, &v), CIDCACHE_NOT_FOUND);
    cidcache_get_op_free(op);

    /* Asynchronous puts, small (inline) and large (create, write, seal), waited for with
     * poll(); the caller's buffers are free as soon as the call returns. */
    {
        size_t big = 300 << 10;
        uint8_t *data = malloc(big);
        for (size_t i = 0; i < big; i++) data[i] = (uint8_t)(i * 7);
        uint8_t k1[64], k2[64];
        size_t l1 = make_key(k1, "put-async-small"), l2 = make_key(k2, "put-async-large");
        cidcache_put_op *p1 = NULL, *p2 = NULL;
        CHECK_STATUS(cidcache_put_async(c, k1, l1, (const uint8_t *)"tiny", 4, NULL, 0, 0, &p1),
                     CIDCACHE_OK);
        CHECK_STATUS(cidcache_put_async(c, k2, l2, data, big, (const uint8_t *)"m", 1, 0, &p2),
                     CIDCACHE_OK);
        memset(data, 0, big);
        struct pollfd pf[2] = {{.fd = cidcache_put_op_fd(p1), .events = POLLIN},
                               {.fd = cidcache_put_op_fd(p2), .events = POLLIN}};
        CHECK(pf[0].fd >= 0 && pf[1].fd >= 0);
        CHECK(poll(&pf[0], 1, 10000) == 1 && poll(&pf[1], 1, 10000) == 1);
        CHECK(cidcache_put_op_ready(p1) && cidcache_put_op_ready(p2));
        CHECK_STATUS(cidcache_put_op_result(p1), CIDCACHE_OK);
        CHECK_STATUS(cidcache_put_op_result(p2), CIDCACHE_OK);
        CHECK_STATUS(cidcache_put_op_result(p2), CIDCACHE_INVALID_ARGUMENT);
        cidcache_put_op_free(p1);
        cidcache_put_op_free(p2);
        CHECK_STATUS(cidcache_get(c, k2, l2, &o, &v), CIDCACHE_OK);
        CHECK(v.data_len == big && v.data[1] == 7 && v.data[big - 1] == (uint8_t)((big - 1) * 7));
        CHECK(v.metadata_len == 1 && v.metadata[0] == 'm');
        cidcache_release(o);
        /* An existing key: the outcome says so. */
        CHECK_STATUS(cidcache_put_async(c, k1, l1, (const uint8_t *)"again", 5, NULL, 0, 0, &p1),
                     CIDCACHE_OK);
        pf[0].fd = cidcache_put_op_fd(p1);
        CHECK(poll(&pf[0], 1, 10000) == 1);
        CHECK_STATUS(cidcache_put_op_result(p1), CIDCACHE_ALREADY_EXISTS);
        cidcache_put_op_free(p1);
        CHECK_STATUS(cidcache_put_async(c, k1, l1, NULL, 0, NULL, 0, 0x80, &p1),
                     CIDCACHE_INVALID_ARGUMENT);
        CHECK(p1 == NULL);
        cidcache_put_op_free(NULL);
        CHECK(cidcache_put_op_fd(NULL) == -1);
        free(data);
    }

    /* Many operations in flight at once, completed by another client's batch. */
    {
        enum { M = 16 };
        struct many_put mp = {.socket = socket_path};
        cidcache_get_op *ops[M];
        struct pollfd pfds[M];
        for (int i = 0; i < M; i++) {
            mp.klens[i] = make_key(mp.keys[i], "async-many");
            CHECK_STATUS(cidcache_get_async(c, mp.keys[i], mp.klens[i], 10000, &ops[i]),
                         CIDCACHE_OK);
            pfds[i].fd = cidcache_get_op_fd(ops[i]);
            pfds[i].events = POLLIN;
        }
        pthread_create(&t, NULL, many_put_thread, &mp);
        /* The fds stay readable once ready: stop polling the ones that are (fd -1 is ignored). */
        int done = 0;
        while (done < M) {
            if (poll(pfds, M, 10000) <= 0) break;
            for (int i = 0; i < M; i++) {
                if (pfds[i].fd >= 0 && (pfds[i].revents & POLLIN)) {
                    pfds[i].fd = -1;
                    done++;
                }
            }
        }
        CHECK(done == M);
        for (int i = 0; i < M; i++) {
            CHECK(cidcache_get_op_ready(ops[i]));
            CHECK_STATUS(cidcache_get_op_result(ops[i], &o, &v), CIDCACHE_OK);
            CHECK(o && v.data_len == 4 && memcmp(v.data, "many", 4) == 0);
            cidcache_release(o);
            cidcache_get_op_free(ops[i]);
        }
        pthread_join(t, NULL);
        CHECK(pinned(c) == 0);
    }

    /* Freeing an operation still in flight cancels it. */
    klen = make_key(key, "async-cancel");
    CHECK_STATUS(cidcache_get_async(c, key, klen, 200, &op), CIDCACHE_OK);
    cidcache_get_op_free(op);
}

/* ---- A minimal Arrow C stream producer: one int64 column "x", `batches` batches. ---- */

struct producer {
    int next;
    int batches;
    int64_t values[4][5];
};

static void release_schema(struct ArrowSchema *s) {
    for (int64_t i = 0; i < s->n_children; i++) {
        if (s->children[i]->release) s->children[i]->release(s->children[i]);
        free(s->children[i]);
    }
    free(s->children);
    s->release = NULL;
}

static void release_child_schema(struct ArrowSchema *s) { s->release = NULL; }

static int p_get_schema(struct ArrowArrayStream *st, struct ArrowSchema *out) {
    (void)st;
    struct ArrowSchema *child = calloc(1, sizeof *child);
    child->format = "l";
    child->name = "x";
    child->flags = ARROW_FLAG_NULLABLE;
    child->release = release_child_schema;
    memset(out, 0, sizeof *out);
    out->format = "+s";
    out->name = "";
    out->n_children = 1;
    out->children = malloc(sizeof(struct ArrowSchema *));
    out->children[0] = child;
    out->release = release_schema;
    return 0;
}

static void release_array(struct ArrowArray *a) {
    for (int64_t i = 0; i < a->n_children; i++) {
        if (a->children[i]->release) a->children[i]->release(a->children[i]);
        free(a->children[i]);
    }
    free(a->children);
    free((void *)a->buffers);
    free(a->private_data);
    a->release = NULL;
}

static int p_get_next(struct ArrowArrayStream *st, struct ArrowArray *out) {
    struct producer *p = st->private_data;
    memset(out, 0, sizeof *out);
    if (p->next >= p->batches) return 0; /* end of stream: release == NULL */
    struct ArrowArray *child = calloc(1, sizeof *child);
    child->length = 5;
    child->n_buffers = 2;
    child->buffers = calloc(2, sizeof(void *));
    /* Arrays outlive the stream (independent lifetimes): each owns a copy of its values. */
    int64_t *vals = malloc(sizeof p->values[0]);
    memcpy(vals, p->values[p->next], sizeof p->values[0]);
    child->buffers[1] = vals;
    child->private_data = vals;
    child->release = release_array;
    out->length = 5;
    out->n_buffers = 1;
    out->buffers = calloc(1, sizeof(void *));
    out->n_children = 1;
    out->children = malloc(sizeof(struct ArrowArray *));
    out->children[0] = child;
    out->release = release_array;
    p->next++;
    return 0;
}

static const char *p_last_error(struct ArrowArrayStream *st) {
    (void)st;
    return NULL;
}

static int stream_released;

static void p_release(struct ArrowArrayStream *st) {
    free(st->private_data);
    st->release = NULL;
    stream_released++;
}

static void make_stream(struct ArrowArrayStream *s, int batches) {
    struct producer *p = calloc(1, sizeof *p);
    p->batches = batches;
    for (int b = 0; b < 4; b++)
        for (int i = 0; i < 5; i++) p->values[b][i] = b * 100 + i;
    s->get_schema = p_get_schema;
    s->get_next = p_get_next;
    s->get_last_error = p_last_error;
    s->release = p_release;
    s->private_data = p;
}

static void test_arrow(cidcache_client *c) {
    uint8_t key[64];
    size_t klen = make_key(key, "arrow");
    struct ArrowArrayStream in;
    make_stream(&in, 3);
    CHECK_STATUS(cidcache_put_arrow(c, key, klen, &in), CIDCACHE_OK);
    CHECK(in.release == NULL && stream_released == 1);

    /* The stored object is flagged as Arrow. */
    cidcache_object *o = NULL;
    cidcache_view v;
    CHECK_STATUS(cidcache_get(c, key, klen, &o, &v), CIDCACHE_OK);
    CHECK(v.flags & CIDCACHE_OBJECT_ARROW);
    cidcache_release(o);

    struct ArrowArrayStream s;
    CHECK_STATUS(cidcache_get_arrow(c, key, klen, &s), CIDCACHE_OK);
    CHECK(s.release != NULL);
    struct ArrowSchema schema;
    CHECK(s.get_schema(&s, &schema) == 0);
    CHECK(strcmp(schema.format, "+s") == 0 && schema.n_children == 1);
    CHECK(strcmp(schema.children[0]->format, "l") == 0);
    CHECK(strcmp(schema.children[0]->name, "x") == 0);
    schema.release(&schema);

    struct ArrowArray arrays[4];
    int n = 0;
    for (;;) {
        struct ArrowArray a;
        CHECK(s.get_next(&s, &a) == 0);
        if (a.release == NULL) break;
        if (n < 4) arrays[n++] = a;
    }
    CHECK(n == 3);
    for (int b = 0; b < n; b++) {
        struct ArrowArray *col = arrays[b].children[0];
        CHECK(arrays[b].length == 5 && col->length == 5);
        const int64_t *vals = col->buffers[1];
        CHECK(vals[0] == b * 100 && vals[4] == b * 100 + 4);
        /* Zero-copy: the values live in the shared mapping. */
        CHECK(in_shared_mapping(vals, 5 * sizeof(int64_t)));
    }
    /* The stream and each array keep the object pinned; the last release unpins. */
    CHECK(pinned(c) == 1);
    s.release(&s);
    CHECK(s.release == NULL);
    CHECK(pinned(c) == 1);
    for (int b = 0; b < n; b++) arrays[b].release(&arrays[b]);
    CHECK(pinned(c) == 0);

    /* A stream read to its end, its arrays released, still holds the pin until released. */
    CHECK_STATUS(cidcache_get_arrow(c, key, klen, &s), CIDCACHE_OK);
    for (;;) {
        struct ArrowArray a;
        CHECK(s.get_next(&s, &a) == 0);
        if (a.release == NULL) break;
        a.release(&a);
    }
    CHECK(pinned(c) == 1);
    s.release(&s);
    CHECK(pinned(c) == 0);

    /* From an object obtained by get. */
    CHECK_STATUS(cidcache_get(c, key, klen, &o, NULL), CIDCACHE_OK);
    CHECK_STATUS(cidcache_object_to_arrow(o, &s), CIDCACHE_OK);
    struct ArrowArray a;
    CHECK(s.get_next(&s, &a) == 0 && a.release != NULL && a.length == 5);
    a.release(&a);
    s.release(&s);
    CHECK(pinned(c) == 0);

    /* Errors: missing key, not an Arrow object, already-released stream, existing key. */
    size_t mlen = make_key(key, "arrow-missing");
    CHECK_STATUS(cidcache_get_arrow(c, key, mlen, &s), CIDCACHE_NOT_FOUND);
    CHECK(s.release == NULL);
    mlen = make_key(key, "not-arrow");
    CHECK_STATUS(cidcache_put(c, key, mlen, (const uint8_t *)"raw", 3), CIDCACHE_OK);
    CHECK_STATUS(cidcache_get_arrow(c, key, mlen, &s), CIDCACHE_NOT_ARROW);
    CHECK(s.release == NULL);
    CHECK(strstr(cidcache_last_error(), "not stored as an Arrow object") != NULL);
    CHECK(pinned(c) == 0);
    CHECK_STATUS(cidcache_get(c, key, mlen, &o, NULL), CIDCACHE_OK);
    CHECK_STATUS(cidcache_object_to_arrow(o, &s), CIDCACHE_NOT_ARROW); /* takes o */
    CHECK(s.release == NULL && pinned(c) == 0);
    CHECK_STATUS(cidcache_object_to_arrow(NULL, &s), CIDCACHE_INVALID_ARGUMENT);
    CHECK_STATUS(cidcache_put_arrow(c, key, mlen, &in), CIDCACHE_INVALID_ARGUMENT);
    make_stream(&in, 1);
    CHECK_STATUS(cidcache_put_arrow(c, key, mlen, &in), CIDCACHE_ALREADY_EXISTS);
    CHECK(in.release == NULL && stream_released == 2);
    CHECK_STATUS(cidcache_get_arrow(c, key, mlen, NULL), CIDCACHE_INVALID_ARGUMENT);

    /* An empty stream keeps its schema. */
    mlen = make_key(key, "arrow-empty");
    make_stream(&in, 0);
    CHECK_STATUS(cidcache_put_arrow(c, key, mlen, &in), CIDCACHE_OK);
    CHECK_STATUS(cidcache_get_arrow(c, key, mlen, &s), CIDCACHE_OK);
    CHECK(s.get_schema(&s, &schema) == 0 && schema.n_children == 1);
    schema.release(&schema);
    CHECK(s.get_next(&s, &a) == 0 && a.release == NULL);
    CHECK(pinned(c) == 1); /* no batch holds the object: the stream does */
    s.release(&s);
    CHECK(pinned(c) == 0);
}

struct reader_arg {
    cidcache_client *c;
    uint8_t key[64];
    size_t klen;
    int ok;
};

static void *reader_thread(void *arg) {
    struct reader_arg *r = arg;
    r->ok = 1;
    for (int i = 0; i < 2000; i++) {
        cidcache_object *o = NULL;
        cidcache_view v;
        if (cidcache_get(r->c, r->key, r->klen, &o, &v) != CIDCACHE_OK || v.data_len != 6 ||
            memcmp(v.data, "shared", 6) != 0)
            r->ok = 0;
        cidcache_release(o);
    }
    return NULL;
}

static void test_threads(cidcache_client *c) {
    enum { T = 4 };
    struct reader_arg args[T];
    pthread_t th[T];
    uint8_t key[64];
    size_t klen = make_key(key, "threads");
    CHECK_STATUS(cidcache_put(c, key, klen, (const uint8_t *)"shared", 6), CIDCACHE_OK);
    for (int i = 0; i < T; i++) {
        args[i].c = c;
        memcpy(args[i].key, key, klen);
        args[i].klen = klen;
        pthread_create(&th[i], NULL, reader_thread, &args[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].ok);
    }
    CHECK(pinned(c) == 0);
}

static void test_read_only(void) {
    cidcache_client *ro = NULL;
    CHECK_STATUS(cidcache_connect(socket_path, NULL, CIDCACHE_CONNECT_READ_ONLY, &ro), CIDCACHE_OK);
    uint8_t key[64];
    size_t klen = make_key(key, "ro");
    cidcache_writer *w = NULL;
    CHECK(cidcache_create(ro, key, klen, 10, 0, &w) != CIDCACHE_OK);
    CHECK(w == NULL);
    cidcache_disconnect(ro);
}

static void test_object_outlives_client(void) {
    cidcache_client *c = NULL;
    CHECK_STATUS(cidcache_connect(socket_path, NULL, 0, &c), CIDCACHE_OK);
    uint8_t key[64];
    size_t klen = make_key(key, "outlive");
    CHECK_STATUS(cidcache_put(c, key, klen, (const uint8_t *)"kept", 4), CIDCACHE_OK);
    cidcache_object *o = NULL;
    cidcache_view v;
    CHECK_STATUS(cidcache_get(c, key, klen, &o, &v), CIDCACHE_OK);
    cidcache_disconnect(c);
    CHECK(v.data_len == 4 && memcmp(v.data, "kept", 4) == 0);
    cidcache_release(o);
}

int main(void) {
    socket_path = getenv("CIDCACHE_SOCKET");
    store_name = getenv("CIDCACHE_STORE");
    if (!socket_path || !store_name) {
        fprintf(stderr, "set CIDCACHE_SOCKET and CIDCACHE_STORE (tests/run-ffi-tests.sh does)\n");
        return 2;
    }
    test_errors();
    cidcache_client *c = NULL;
    CHECK_STATUS(cidcache_connect(socket_path, NULL, 0, &c), CIDCACHE_OK);
    if (!c) {
        printf("%d passed, %d failed\n", passed, failed);
        return 1;
    }
    test_put_get(c);
    test_create_seal(c);
    test_batches(c);
    test_list_stats(c);
    test_cid(c);
    test_waits(c);
    test_arrow(c);
    test_threads(c);
    test_read_only();
    test_object_outlives_client();
    test_connect_env_store();
    CHECK(pinned(c) == 0);
    cidcache_disconnect(c);
    printf("c: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
