/* A hand-written stand-in for a profiling build: a `kiln__model` descriptor with profiling
 * tables and a plan function that brackets its three kernel calls with kiln__profile_begin /
 * kiln__profile_end, as generated code does. Tests the runtime's profiling deterministically.
 *
 * inputs:  delay_us i32[]  (kernel 0 sleeps this long)
 *          wait_for i32[]  (each chunk of kernel 1's parallel loop waits, up to a second, until
 *                           this many chunks have started: 2 makes a pool worker take part)
 *          repeats i32[]   (kernel 2 is timed this many times per run: floods the trace)
 * outputs: chunks i32[]    (chunks kernel 1 ran)
 * Build with -DKILN_TEST_NO_PROFILE for the same model without profiling.
 */
#define _POSIX_C_SOURCE 199309L
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "kiln_internal.h"

#define ITEMS 64

static const kiln_tensor_info inputs[] = {
    {"delay_us", KILN_I32, 0, NULL},
    {"wait_for", KILN_I32, 0, NULL},
    {"repeats", KILN_I32, 0, NULL},
};
static const kiln_tensor_info outputs[] = {
    {"chunks", KILN_I32, 0, NULL},
};

typedef struct closure {
    int32_t wait_for;
    atomic_int entered;
} closure;

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

static void chunk_body(void *arg, int64_t begin, int64_t end) {
    closure *c = arg;
    (void)begin;
    (void)end;
    atomic_fetch_add(&c->entered, 1);
    double deadline = seconds() + 1.0;
    while (atomic_load(&c->entered) < c->wait_for && seconds() < deadline) {
    }
}

#ifdef KILN_TEST_NO_PROFILE
#define BEGIN(ctx, index) ((void)0)
#define END(ctx, index) ((void)0)
#else
#define BEGIN(ctx, index) kiln__profile_begin(ctx, index)
#define END(ctx, index) kiln__profile_end(ctx, index)
#endif

static int32_t plan_run(void *ctx, const void *const *in, void *const *out, uint8_t *arena,
                        const uint8_t *weights, int64_t *dims) {
    (void)dims;
    (void)arena;
    (void)weights;
    int32_t delay = *(const int32_t *)in[0];
    BEGIN(ctx, 0);
    if (delay > 0) {
        struct timespec pause = {delay / 1000000, (long)(delay % 1000000) * 1000L};
        nanosleep(&pause, NULL);
    }
    END(ctx, 0);

    closure c = {*(const int32_t *)in[1], 0};
    BEGIN(ctx, 1);
    kiln__parallel_for(ctx, chunk_body, &c, ITEMS);
    END(ctx, 1);
    *(int32_t *)out[0] = atomic_load(&c.entered);

    int32_t repeats = *(const int32_t *)in[2];
    for (int32_t r = 0; r < repeats; r++) {
        BEGIN(ctx, 2);
        END(ctx, 2);
    }
    return 0;
}

#ifdef KILN_TEST_NO_PROFILE
#define PROFILE NULL
#else
static const kiln_kernel_info kernels[] = {
    {"k0_sleep", "sleep_a,sleep_b", 1000, 64},
    {"k1_parallel", "spread", 123456789012LL, 4096},
    {"k2_repeat", "", 0, 0},
};
static const kiln_profile_desc profile = {3, kernels};
#define PROFILE (&profile)
#endif

const kiln_model_desc kiln__model = {
    KILN_ABI_VERSION, 3, 1, 0, inputs, outputs, 64, 0, NULL, 0, plan_run, PROFILE,
    0, 0, NULL, NULL, NULL, 0, NULL,
};
