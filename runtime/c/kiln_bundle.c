/* Kiln bundle runtime: the freestanding services of a static bundle (kiln_bundle.h).
 *
 * Merged into the bundle object (`kiln compile --static`) in place of kiln_runtime.c, and
 * compiled with -ffreestanding: it includes only compiler headers, calls no library function
 * (the compiler may still copy a struct with memcpy), and keeps no mutable state except the
 * last error message. It implements the kiln_bundle_*
 * API on top of the `kiln__model` descriptor of the generated code (kiln_internal.h) and the
 * services that code calls:
 *   - kiln__parallel_for runs the whole loop on the calling thread (a bundle has no threads);
 *   - kiln__report_error / kiln__failed record a kernel's failure in the run's state, a struct
 *     on kiln_bundle_run's stack that the plan function carries as its `ctx`.
 * Profiling builds are not bundled (kiln__profile_* do not exist here).
 */
#include <stddef.h>
#include <stdint.h>

#include "kiln_bundle.h"
/* Hidden declarations: the generated code's symbols are in the same object, so they are
 * reached PC-relative, with no GOT (nothing to ask of a board's linker script). */
#pragma GCC visibility push(hidden)
#include "kiln_internal.h"
#pragma GCC visibility pop

#define KILN_BUNDLE_API __attribute__((visibility("default")))
#define KILN_ERROR_BYTES 256

/* The per-run state behind the plan function's `ctx`. */
typedef struct kiln_bundle_state {
    const char *failure; /* the first failure a kernel reported, or NULL */
} kiln_bundle_state;

static char last_error[KILN_ERROR_BYTES];

/* ------------------------------------------------------------------------------------------ */
/* Messages without stdio                                                                      */

/* "what: " then pieces; each call takes and returns the length so far, a local rather than
 * shared state, so overlapping failures may mix their text but never overrun the buffer. */

static size_t put_text(size_t at, const char *text) {
    for (; *text != '\0' && at + 1 < KILN_ERROR_BYTES; text++) last_error[at++] = *text;
    last_error[at] = '\0';
    return at;
}

static size_t put_int(size_t at, int32_t value) {
    char text[16];
    size_t count = 0;
    /* Digits from the last, negated one by one so that INT32_MIN needs no special case. */
    int negative = value < 0;
    do {
        int32_t digit = value % 10;
        text[sizeof text - 1 - ++count] = (char)('0' + (negative ? -digit : digit));
        value /= 10;
    } while (value != 0);
    if (negative) text[sizeof text - 1 - ++count] = '-';
    text[sizeof text - 1] = '\0';
    return put_text(at, text + sizeof text - 1 - count);
}

static size_t start_error(const char *what) { return put_text(put_text(0, what), ": "); }

static kiln_status fail(kiln_status status, const char *what, const char *detail) {
    put_text(start_error(what), detail);
    return status;
}

KILN_BUNDLE_API const char *kiln_bundle_last_error(void) { return last_error; }

/* ------------------------------------------------------------------------------------------ */
/* Services of the generated code                                                             */

void kiln__parallel_for(void *ctx, kiln_parallel_body body, void *closure, int64_t n) {
    (void)ctx;
    if (n > 0) body(closure, 0, n);
}

void kiln__report_error(void *ctx, const char *message) {
    kiln_bundle_state *state = ctx;
    if (state->failure == NULL) state->failure = message != NULL ? message : "kernel failure";
}

int32_t kiln__failed(void *ctx) { return ((kiln_bundle_state *)ctx)->failure != NULL; }

/* ------------------------------------------------------------------------------------------ */
/* Model queries                                                                               */

KILN_BUNDLE_API int64_t kiln_bundle_arena_bytes(void) { return kiln__model.arena_bytes; }
KILN_BUNDLE_API int64_t kiln_bundle_weights_bytes(void) { return kiln__model.weights_bytes; }
KILN_BUNDLE_API int32_t kiln_bundle_weights_embedded(void) {
    return !kiln__model.weights_external;
}
KILN_BUNDLE_API int32_t kiln_bundle_num_inputs(void) { return kiln__model.num_inputs; }
KILN_BUNDLE_API int32_t kiln_bundle_num_outputs(void) { return kiln__model.num_outputs; }

static kiln_status tensor_info(const char *what, const kiln_tensor_info *table, int32_t count,
                               int32_t index, kiln_tensor_info *info) {
    if (info == NULL) return fail(KILN_ERROR_INVALID_ARGUMENT, what, "info is NULL");
    if (index < 0 || index >= count) {
        size_t at = put_text(start_error(what), "index ");
        at = put_text(put_int(at, index), " out of range (the model has ");
        put_text(put_int(at, count), ")");
        return KILN_ERROR_INVALID_ARGUMENT;
    }
    *info = table[index];
    return KILN_OK;
}

KILN_BUNDLE_API kiln_status kiln_bundle_input_info(int32_t index, kiln_tensor_info *info) {
    return tensor_info("kiln_bundle_input_info", kiln__model.inputs, kiln__model.num_inputs,
                       index, info);
}

KILN_BUNDLE_API kiln_status kiln_bundle_output_info(int32_t index, kiln_tensor_info *info) {
    return tensor_info("kiln_bundle_output_info", kiln__model.outputs, kiln__model.num_outputs,
                       index, info);
}

/* ------------------------------------------------------------------------------------------ */
/* Weights and run                                                                             */

/* The blob a call uses: the caller's, else the embedded one (NULL for a model without
 * weights, whose plan never reads them). */
static kiln_status choose_weights(const char *what, const void *weights, const uint8_t **blob) {
    if (weights == NULL && kiln__model.weights_external) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, what,
                    "weights is NULL, but this bundle was compiled with external weights: pass "
                    "the contents of its .weights.bin");
    }
    *blob = weights != NULL ? weights : kiln__model.weights;
    return KILN_OK;
}

static int misaligned(const void *pointer) {
    return ((uintptr_t)pointer & (KILN_BUNDLE_ALIGNMENT - 1)) != 0;
}

KILN_BUNDLE_API kiln_status kiln_bundle_check_weights(const void *weights) {
    const char *what = "kiln_bundle_check_weights";
    const uint8_t *blob = NULL;
    kiln_status status = choose_weights(what, weights, &blob);
    if (status != KILN_OK) return status;
    uint64_t hash = KILN_FNV64_OFFSET;
    for (int64_t i = 0; i < kiln__model.weights_bytes; i++) {
        hash ^= blob[i];
        hash *= KILN_FNV64_PRIME;
    }
    if (hash != kiln__model.weights_checksum) {
        return fail(KILN_ERROR_WEIGHTS, what,
                    "the weights' checksum differs from the one this model was compiled with "
                    "(another build's weights, or damaged)");
    }
    return KILN_OK;
}

static int has_elements(const kiln_tensor_info *info) {
    for (int32_t d = 0; d < info->rank; d++) {
        if (info->shape[d] == 0) return 0;
    }
    return 1;
}

static kiln_status check_buffers(const char *kind, const kiln_tensor_info *table, int32_t count,
                                 const void *const *buffers) {
    for (int32_t i = 0; i < count; i++) {
        if (buffers == NULL || (buffers[i] == NULL && has_elements(&table[i]))) {
            size_t at = put_text(start_error("kiln_bundle_run"), kind);
            if (buffers == NULL) {
                put_text(at, "s is NULL");
            } else {
                at = put_text(put_int(put_text(at, " "), i), " ('");
                put_text(put_text(at, table[i].name), "') is NULL");
            }
            return KILN_ERROR_INVALID_ARGUMENT;
        }
    }
    return KILN_OK;
}

KILN_BUNDLE_API kiln_status kiln_bundle_run(const void *weights, void *arena,
                                            const void *const *inputs, void *const *outputs) {
    const char *what = "kiln_bundle_run";
    const uint8_t *blob = NULL;
    kiln_status status = choose_weights(what, weights, &blob);
    if (status != KILN_OK) return status;
    if (misaligned(blob)) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, what,
                    "weights is not 64-byte aligned (KILN_BUNDLE_ALIGNMENT)");
    }
    if (arena == NULL && kiln__model.arena_bytes > 0) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, what,
                    "arena is NULL (it needs KILN_MODEL_ARENA_BYTES bytes)");
    }
    if (misaligned(arena)) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, what,
                    "arena is not 64-byte aligned (KILN_BUNDLE_ALIGNMENT)");
    }
    status = check_buffers("input", kiln__model.inputs, kiln__model.num_inputs, inputs);
    if (status == KILN_OK) {
        status = check_buffers("output", kiln__model.outputs, kiln__model.num_outputs,
                               (const void *const *)outputs);
    }
    if (status != KILN_OK) return status;
    kiln_bundle_state state = {NULL};
    int32_t code = kiln__model.run(&state, inputs, outputs, arena, blob, NULL);
    if (state.failure != NULL) return fail(KILN_ERROR_RUNTIME, what, state.failure);
    if (code != 0) {
        put_int(put_text(start_error(what), "the model failed with code "), code);
        return KILN_ERROR_RUNTIME;
    }
    return KILN_OK;
}
