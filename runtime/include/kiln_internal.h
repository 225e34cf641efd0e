/* Kiln internal interface between generated code and the C runtime (not part of the public ABI).
 *
 * The code generator emits one LLVM module per model that defines `kiln__model` (the descriptor
 * below), the plan function it points to, and the kernels. The C runtime (kiln_runtime.c,
 * compiled for the target and linked into every model library) implements kiln.h on top of the
 * descriptor and provides the kiln__* services that generated code calls. None of these symbols
 * is exported from the shared library; only the kiln_* functions of kiln.h are.
 */
#ifndef KILN_INTERNAL_H
#define KILN_INTERNAL_H

#include <stdint.h>

#include "kiln.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The plan function: runs the kernels in order. `ctx` is the instance (pass it to every kiln__*
 * service); `arena` is the instance's activation arena (arena_bytes, 64-byte aligned); `weights`
 * the weights blob (embedded or loaded from the external file). Returns 0, or nonzero after a
 * kernel reported an error through kiln__report_error. */
typedef int32_t (*kiln_run_fn)(void *ctx, const void *const *inputs, void *const *outputs,
                               uint8_t *arena, const uint8_t *weights);

/* The static profiling tables of a library compiled with profiling. */
typedef struct kiln_profile_desc {
    int32_t num_kernels;              /* kernel calls in the plan */
    const kiln_kernel_info *kernels;  /* num_kernels entries, in plan order */
} kiln_profile_desc;

typedef struct kiln_model_desc {
    int32_t abi_version;          /* KILN_ABI_VERSION */
    int32_t num_inputs;
    int32_t num_outputs;
    int32_t weights_external;     /* 1: weights come from a file at create time */
    const kiln_tensor_info *inputs;
    const kiln_tensor_info *outputs;
    int64_t arena_bytes;          /* activation arena size (64-byte aligned offsets) */
    int64_t weights_bytes;
    const uint8_t *weights;       /* embedded weights (symbol kiln__weights) or NULL */
    uint64_t weights_checksum;    /* FNV-1a 64 of the weights bytes */
    kiln_run_fn run;
    const kiln_profile_desc *profile; /* NULL unless compiled with profiling */
} kiln_model_desc;

/* Defined by the generated code. */
extern const kiln_model_desc kiln__model;

/* Body of a parallel loop: handles iterations [begin, end). */
typedef void (*kiln_parallel_body)(void *closure, int64_t begin, int64_t end);

/* Split [0, n) into one contiguous chunk per pool thread (the calling thread takes the first)
 * and return when all chunks are done. Calls from inside a parallel body run serially. */
void kiln__parallel_for(void *ctx, kiln_parallel_body body, void *closure, int64_t n);

/* Record a run-time data failure; the first message of a run wins. Thread-safe. */
void kiln__report_error(void *ctx, const char *message);

/* 1 if a failure was reported during the current run, else 0. */
int32_t kiln__failed(void *ctx);

/* Profiling builds only: the plan function brackets kernel call `index` (its position in the
 * plan) with these two, on the thread running the plan. */
void kiln__profile_begin(void *ctx, int32_t index);
void kiln__profile_end(void *ctx, int32_t index);

/* External weights file: a 64-byte header (magic, u64 byte count, u64 FNV-1a 64 checksum of
 * the bytes, zero padding; integers little-endian) followed by the bytes. */
#define KILN_WEIGHTS_MAGIC "KILNWTS1"
#define KILN_WEIGHTS_HEADER_BYTES 64
#define KILN_FNV64_OFFSET 0xcbf29ce484222325ULL
#define KILN_FNV64_PRIME 0x100000001b3ULL

#ifdef __cplusplus
}
#endif

#endif /* KILN_INTERNAL_H */
