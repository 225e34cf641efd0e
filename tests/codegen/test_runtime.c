/* A stand-in for the Kiln C runtime, for codegen tests: parallel_for really splits the range
 * across threads (uneven chunks) so outlining bugs show, and reported errors are recorded. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

typedef struct test_ctx {
    int32_t failed;
    int32_t chunks;     /* how many pieces parallel_for splits a range into */
    int64_t calls;      /* parallel_for calls seen */
    char message[256];
    pthread_mutex_t lock;
} test_ctx;

typedef void (*body_fn)(void *closure, int64_t begin, int64_t end);

typedef struct chunk {
    body_fn fn;
    void *closure;
    int64_t begin, end;
} chunk;

static void *run_chunk(void *arg) {
    chunk *c = (chunk *)arg;
    c->fn(c->closure, c->begin, c->end);
    return NULL;
}

int64_t kiln_test_ctx_size(void) { return (int64_t)sizeof(test_ctx); }

void kiln_test_ctx_init(test_ctx *ctx, int32_t chunks) {
    memset(ctx, 0, sizeof *ctx);
    ctx->chunks = chunks;
    pthread_mutex_init(&ctx->lock, NULL);
}

void kiln__parallel_for(void *opaque, void *fn, void *closure, int64_t n) {
    test_ctx *ctx = (test_ctx *)opaque;
    enum { MAX_CHUNKS = 16 };
    chunk chunks[MAX_CHUNKS];
    pthread_t threads[MAX_CHUNKS];
    int64_t pieces = ctx->chunks < MAX_CHUNKS ? ctx->chunks : MAX_CHUNKS;
    if (n <= 0) return;
    if (pieces > n) pieces = n;
    if (pieces < 1) pieces = 1;
    __atomic_fetch_add(&ctx->calls, 1, __ATOMIC_RELAXED);
    int64_t start = 0;
    for (int64_t i = 0; i < pieces; i++) {
        /* uneven split: the last chunk takes the remainder */
        int64_t size = (i == pieces - 1) ? n - start : n / pieces;
        chunks[i] = (chunk){(body_fn)fn, closure, start, start + size};
        start += size;
    }
    for (int64_t i = 1; i < pieces; i++) pthread_create(&threads[i], NULL, run_chunk, &chunks[i]);
    run_chunk(&chunks[0]);
    for (int64_t i = 1; i < pieces; i++) pthread_join(threads[i], NULL);
}

void kiln__report_error(void *opaque, const char *message) {
    test_ctx *ctx = (test_ctx *)opaque;
    pthread_mutex_lock(&ctx->lock);
    if (!ctx->failed) {
        strncpy(ctx->message, message, sizeof ctx->message - 1);
        ctx->failed = 1;
    }
    pthread_mutex_unlock(&ctx->lock);
}

int32_t kiln__failed(void *opaque) { return ((test_ctx *)opaque)->failed; }
