/* A hand-written stand-in for the code Kiln generates: a `kiln__model` descriptor and its plan
 * function, used to test the C runtime, the artifact builder and kiln.runtime end to end.
 *
 * inputs:  x f32[N], idx i64[], delay_ms i32[], h bf16[3]
 * outputs: out f32[N] = 2 * x + w (w: the weights, f32[N]; 2 * x staged in the arena),
 *          sel f32[] = x[idx] (idx out of range: a reported error),
 *          chunks i32[] (parallel body invocations), nested i32[] (nested invocations),
 *          h2 bf16[3] = h
 * Build with -DKILN_TEST_EXTERNAL -DKILN_TEST_CHECKSUM=0x...ULL for external weights.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "kiln_internal.h"

#define N 4099
/* pack_weights pads the blob to a multiple of 64 bytes. */
#define WEIGHTS_BYTES ((N * 4 + 63) / 64 * 64)

static const int64_t shape_n[] = {N};
static const int64_t shape_3[] = {3};

static const kiln_tensor_info inputs[] = {
    {"x", KILN_F32, 1, shape_n},
    {"idx", KILN_I64, 0, NULL},
    {"delay_ms", KILN_I32, 0, NULL},
    {"h", KILN_BF16, 1, shape_3},
};
static const kiln_tensor_info outputs[] = {
    {"out", KILN_F32, 1, shape_n},
    {"sel", KILN_F32, 0, NULL},
    {"chunks", KILN_I32, 0, NULL},
    {"nested", KILN_I32, 0, NULL},
    {"h2", KILN_BF16, 1, shape_3},
};

typedef struct closure {
    void *ctx;
    const float *x, *w;
    float *tmp, *out;
    atomic_int chunks, nested;
} closure;

static void nested_body(void *arg, int64_t begin, int64_t end) {
    closure *c = arg;
    atomic_fetch_add(&c->nested, 1);
    for (int64_t i = begin; i < end; i++) c->tmp[i] = 2.0f * c->x[i];
}

static void outer_body(void *arg, int64_t begin, int64_t end) {
    closure *c = arg;
    atomic_fetch_add(&c->chunks, 1);
    /* Only the subrange matters to the nested loop; offsetting keeps it exact. */
    closure shifted = {c->ctx, c->x + begin, c->w, c->tmp + begin, c->out, 0, 0};
    kiln__parallel_for(c->ctx, nested_body, &shifted, end - begin);
    atomic_fetch_add(&c->nested, atomic_load(&shifted.nested));
}

static void add_body(void *arg, int64_t begin, int64_t end) {
    closure *c = arg;
    for (int64_t i = begin; i < end; i++) c->out[i] = c->tmp[i] + c->w[i];
}

static int32_t plan_run(void *ctx, const void *const *in, void *const *out, uint8_t *arena,
                        const uint8_t *weights, int64_t *dims) {
    (void)dims;
    if ((uintptr_t)arena % 64 != 0 || (uintptr_t)weights % 64 != 0) {
        kiln__report_error(ctx, "arena or weights not 64-byte aligned");
        return 1;
    }
    int32_t delay = *(const int32_t *)in[2];
    if (delay > 0) {
        struct timespec pause = {delay / 1000, (long)(delay % 1000) * 1000000L};
        nanosleep(&pause, NULL);
    }
    closure c = {ctx, in[0], (const float *)weights, (float *)arena, out[0], 0, 0};
    kiln__parallel_for(ctx, outer_body, &c, N);
    kiln__parallel_for(ctx, add_body, &c, N);
    *(int32_t *)out[2] = atomic_load(&c.chunks);
    *(int32_t *)out[3] = atomic_load(&c.nested);
    memcpy(out[4], in[3], 3 * sizeof(uint16_t));
    int64_t idx = *(const int64_t *)in[1];
    *(float *)out[1] = 0.0f;
    if (idx < 0 || idx >= N) {
        kiln__report_error(ctx, "gather: index out of range");
        kiln__report_error(ctx, "a second report must not replace the first");
    } else {
        *(float *)out[1] = c.x[idx];
    }
    return kiln__failed(ctx) ? 1 : 0;
}

#ifdef KILN_TEST_EXTERNAL
#define WEIGHTS_EXTERNAL 1
#define WEIGHTS_POINTER NULL
#else
extern const uint8_t kiln__weights[];
#define WEIGHTS_EXTERNAL 0
#define WEIGHTS_POINTER kiln__weights
#define KILN_TEST_CHECKSUM 0
#endif

const kiln_model_desc kiln__model = {
    KILN_ABI_VERSION, 4, 5, WEIGHTS_EXTERNAL, inputs, outputs,
    N * sizeof(float) + 64, WEIGHTS_BYTES, WEIGHTS_POINTER, KILN_TEST_CHECKSUM, plan_run, NULL,
    0, 0, NULL, NULL, NULL, 0, NULL,
};
