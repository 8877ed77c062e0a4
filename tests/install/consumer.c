/* A program built against an installed cidcache (with pkg-config or CMake): put, get, compare.
 * Connects to the socket named by $CIDCACHE_SOCKET. Exits 0 on success. */
#include <cidcache.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, enum cidcache_status s) {
    fprintf(stderr, "%s: %s: %s\n", what, cidcache_status_name(s), cidcache_last_error());
    return 1;
}

int main(void) {
    struct cidcache_client *c = NULL;
    enum cidcache_status s = cidcache_connect(getenv("CIDCACHE_SOCKET"), NULL, 0, &c);
    if (s != CIDCACHE_OK) return fail("connect", s);
    static const char key[] = "installed-consumer";
    static const char data[] = "bytes through an installed libcidcache";
    s = cidcache_put(c, (const uint8_t *)key, sizeof key - 1, (const uint8_t *)data, sizeof data);
    if (s != CIDCACHE_OK && s != CIDCACHE_ALREADY_EXISTS) return fail("put", s);
    struct cidcache_object *o = NULL;
    struct cidcache_view v;
    s = cidcache_get(c, (const uint8_t *)key, sizeof key - 1, &o, &v);
    if (s != CIDCACHE_OK) return fail("get", s);
    int same = v.data_len == sizeof data && memcmp(v.data, data, sizeof data) == 0;
    cidcache_release(o);
    cidcache_disconnect(c);
    printf("cidcache %s: %s\n", cidcache_version(), same ? "ok" : "MISMATCH");
    return same ? 0 : 1;
}
