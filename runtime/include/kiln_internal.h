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
 * the weights blob (embedded or loaded from the external file); `dims` the run's extents
 * (num_dims slots, filled by `bind`; NULL for a static model). Returns 0, 1 after a kernel
 * reported an error through kiln__report_error, 2 when kiln__arena or kiln__dynamic failed. */
typedef int32_t (*kiln_run_fn)(void *ctx, const void *const *inputs, void *const *outputs,
                               uint8_t *arena, const uint8_t *weights, int64_t *dims);

/* Models with run-time extents: read the input symbols from `input_shapes` into `dims` and
 * check every input extent. Returns 0, or KILN_BIND_EXTENT / KILN_BIND_BOUNDS / KILN_BIND_EMPTY
 * (a free axis of extent 0: symbols are at least 1) with `info` = {input, axis, extent given,
 * extent expected (or smallest allowed), largest allowed (or -1)}. */
typedef int32_t (*kiln_bind_fn)(const int64_t *const *input_shapes, int64_t *dims,
                                int64_t *info);
#define KILN_BIND_EXTENT 1
#define KILN_BIND_BOUNDS 2
#define KILN_BIND_EMPTY 3

/* Write every output's extents, in output order, to `out`; with `before_run` nonzero an extent
 * that depends on values computed by the run is -1. */
typedef void (*kiln_shapes_fn)(const int64_t *dims, int32_t before_run, int64_t *out);

/* The static profiling tables of a library compiled with profiling. */
typedef struct kiln_profile_desc {
    int32_t num_kernels;              /* kernel calls in the plan */
    const kiln_kernel_info *kernels;  /* num_kernels entries, in plan order */
} kiln_profile_desc;

/* A static plan of a model with run-time extents, for the input shapes `input_extents` (every
 * input's extents in input order): run instead of the general plan when the shapes match. */
typedef struct kiln_specialized_plan {
    const int64_t *input_extents;
    kiln_run_fn run;
    int64_t arena_bytes;
} kiln_specialized_plan;

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
    int32_t num_dims;             /* run-time extent slots; 0 for a static model */
    int32_t num_dynamic;          /* buffers allocated during a run (kiln__dynamic) */
    kiln_bind_fn bind;            /* NULL for a static model */
    kiln_shapes_fn shapes;        /* NULL for a static model */
    const int32_t *output_dynamic; /* per output: the dynamic buffer holding it, or -1 */
    int32_t num_specialized;
    const kiln_specialized_plan *specialized; /* num_specialized static plans */
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

/* Models with run-time extents: the arena for this run, at least `bytes` (the instance's,
 * grown if needed; 64-byte aligned), or NULL when out of memory. */
uint8_t *kiln__arena(void *ctx, int64_t bytes);

/* Dynamic buffer `index` for this run, at least `bytes` (64-byte aligned; kept by the instance
 * for later runs), or NULL when out of memory. */
void *kiln__dynamic(void *ctx, int32_t index, int64_t bytes);

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
