/*
 * N worker processes read the record batches of one Arrow dataset through cidcache, in C.
 *
 *   shared_loader SOCKET KEY [WORKERS]
 *
 * Each worker (a fork()ed process with its own connection) waits for the dataset KEY (a name
 * such as "datasets/train", its UTF-8 bytes being the key; the first worker's request promotes it
 * from the warm tier when it is not in shared memory, and every other worker waits for that same
 * promotion), then walks its record batches through the Arrow C stream interface
 * (cidcache_get_arrow): every buffer points into the shared mapping, nothing is copied. Each
 * worker sums the float64 and int64 columns (to touch the data) and reports its time to first
 * batch, wall time, batches and rows; the parent prints them and checks that every worker saw the
 * same sums. Exit status 0 when all workers read the same data and released every pin.
 *
 * Build: cc -O2 -I include examples/c/shared_loader.c -L target/release -lcidcache
 *        (examples/run-examples.sh builds it and runs it against a dataset the Python loader put).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cidcache.h"

struct result {
    int ok;
    double first_batch_at; /* CLOCK_MONOTONIC seconds */
    double first_batch_s;
    double wall_s;
    int64_t batches, rows;
    double sum_f64;
    int64_t sum_i64;
    size_t pinned_after;
    char error[200];
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(struct result *r, const char *what) {
    r->ok = 0;
    snprintf(r->error, sizeof r->error, "%s: %s", what, cidcache_last_error());
}

/* One worker: connect, wait on the go pipe, read every batch. */
static void work(const char *socket, const char *key, int ready_fd, int go_fd, struct result *r) {
    memset(r, 0, sizeof *r);
    r->ok = 1;
    cidcache_client *c = NULL;
    char byte = 1;
    if (cidcache_connect(socket, NULL, 0, &c) != CIDCACHE_OK) {
        fail(r, "connect");
        if (write(ready_fd, &byte, 1) != 1) { /* the parent sees the error in the result */ }
        return;
    }
    if (write(ready_fd, &byte, 1) != 1 || read(go_fd, &byte, 1) != 1) {
        snprintf(r->error, sizeof r->error, "barrier: %s", strerror(errno));
        r->ok = 0;
        cidcache_disconnect(c);
        return;
    }
    double t0 = now();
    const uint8_t *k = (const uint8_t *)key;
    size_t klen = strlen(key);

    /* A get that waits: a hit, or the daemon promotes the dataset from the warm tier once and
     * answers every worker waiting for it. */
    cidcache_object *obj = NULL;
    cidcache_view view;
    if (cidcache_get_timeout(c, k, klen, 600000, &obj, &view) != CIDCACHE_OK) {
        fail(r, "get");
        cidcache_disconnect(c);
        return;
    }
    struct ArrowArrayStream stream;
    cidcache_status s = cidcache_get_arrow(c, k, klen, &stream);
    cidcache_release(obj); /* the stream holds its own pin */
    if (s != CIDCACHE_OK) {
        fail(r, "get_arrow");
        cidcache_disconnect(c);
        return;
    }
    struct ArrowSchema schema;
    if (stream.get_schema(&stream, &schema) != 0) {
        snprintf(r->error, sizeof r->error, "get_schema: %s", stream.get_last_error(&stream));
        r->ok = 0;
        stream.release(&stream);
        cidcache_disconnect(c);
        return;
    }
    for (;;) {
        struct ArrowArray batch;
        if (stream.get_next(&stream, &batch) != 0) {
            snprintf(r->error, sizeof r->error, "get_next: %s", stream.get_last_error(&stream));
            r->ok = 0;
            break;
        }
        if (batch.release == NULL) break; /* end of stream */
        if (r->batches == 0) r->first_batch_at = now();
        for (int64_t i = 0; i < batch.n_children && i < schema.n_children; i++) {
            const struct ArrowArray *col = batch.children[i];
            const char *fmt = schema.children[i]->format;
            if (col->n_buffers < 2 || col->buffers[1] == NULL) continue;
            if (strcmp(fmt, "g") == 0) {
                const double *v = (const double *)col->buffers[1] + col->offset;
                for (int64_t j = 0; j < col->length; j++) r->sum_f64 += v[j];
            } else if (strcmp(fmt, "l") == 0) {
                const int64_t *v = (const int64_t *)col->buffers[1] + col->offset;
                for (int64_t j = 0; j < col->length; j++) r->sum_i64 += v[j];
            }
        }
        r->rows += batch.length;
        r->batches++;
        batch.release(&batch);
    }
    double done = now();
    schema.release(&schema);
    stream.release(&stream);
    if (r->batches == 0) r->first_batch_at = done;
    r->first_batch_s = r->first_batch_at - t0;
    r->wall_s = done - t0;
    if (cidcache_pinned(c, &r->pinned_after) != CIDCACHE_OK) fail(r, "pinned");
    cidcache_disconnect(c);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s SOCKET KEY [WORKERS]\n", argv[0]);
        return 2;
    }
    const char *socket = argv[1], *key = argv[2];
    int n = argc > 3 ? atoi(argv[3]) : 4;
    if (n < 1 || n > 256 || strlen(key) == 0 || strlen(key) > CIDCACHE_MAX_KEY_LEN) {
        fprintf(stderr, "WORKERS must be 1..256 and KEY 1..%d bytes\n", CIDCACHE_MAX_KEY_LEN);
        return 2;
    }
    int ready[2], go[2], res[2];
    if (pipe(ready) || pipe(go) || pipe(res)) {
        perror("pipe");
        return 1;
    }
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            perror("fork");
            return 1;
        }
        if (pids[i] == 0) {
            struct result r;
            work(socket, key, ready[1], go[0], &r);
            /* One write of less than PIPE_BUF bytes: atomic, results do not interleave. */
            ssize_t w = write(res[1], &r, sizeof r);
            _exit(w == (ssize_t)sizeof r ? 0 : 1);
        }
    }
    char byte;
    for (int i = 0; i < n; i++)
        if (read(ready[0], &byte, 1) != 1) return 1;
    for (int i = 0; i < n; i++)
        if (write(go[1], &byte, 1) != 1) return 1;

    struct result *rs = calloc((size_t)n, sizeof *rs);
    int ok = 1;
    for (int i = 0; i < n; i++) {
        if (read(res[0], &rs[i], sizeof rs[i]) != (ssize_t)sizeof rs[i]) {
            fprintf(stderr, "a worker died without a result\n");
            return 1;
        }
    }
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = 0;
    }
    double first = rs[0].first_batch_at;
    for (int i = 1; i < n; i++)
        if (rs[i].first_batch_at < first) first = rs[i].first_batch_at;
    printf("%6s %12s %10s %9s %8s %10s %10s\n", "worker", "first batch", "after #1", "wall",
           "batches", "rows", "batches/s");
    for (int i = 0; i < n; i++) {
        const struct result *r = &rs[i];
        if (!r->ok) {
            printf("%6d FAILED: %s\n", i + 1, r->error);
            ok = 0;
            continue;
        }
        printf("%6d %10.3fms %8.3fms %7.2fms %8lld %10lld %10.0f\n", i + 1, r->first_batch_s * 1e3,
               (r->first_batch_at - first) * 1e3, r->wall_s * 1e3, (long long)r->batches,
               (long long)r->rows, (double)r->batches / (r->wall_s > 0 ? r->wall_s : 1e-9));
        if (r->batches != rs[0].batches || r->rows != rs[0].rows || r->sum_i64 != rs[0].sum_i64 ||
            r->sum_f64 != rs[0].sum_f64 || r->pinned_after != 0)
            ok = 0;
    }
    printf("all workers saw the same data and released their pins: %s (%lld rows, int64 sum %lld, "
           "float64 sum %.3f)\n",
           ok ? "yes" : "NO", (long long)rs[0].rows, (long long)rs[0].sum_i64, rs[0].sum_f64);
    free(rs);
    free(pids);
    return ok ? 0 : 1;
}
