/* Kiln compiled-model C ABI.
 *
 * A model compiled by Kiln (`kiln compile model.onnx -o model.so`) is a shared library that
 * exports the functions below. The library holds the code, the static execution plan and (unless
 * compiled with --weights external) the weights. No function aborts or exits on bad input: each
 * returns a kiln_status, and kiln_last_error() describes the last failure on the calling thread.
 *
 * An instance owns its activation arena and its thread pool; it is reusable, and separate
 * instances may run concurrently on separate threads. One instance must not run on two threads
 * at once (kiln_run returns KILN_ERROR_BUSY if it is).
 */
#ifndef KILN_H
#define KILN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version 2 added the profiling functions (kiln_profile_*), version 3 run-time extents
 * (kiln_infer_shapes, kiln_run_shaped, kiln_output). */
#define KILN_ABI_VERSION 3

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERROR_INVALID_ARGUMENT = 1, /* null pointer, index out of range, bad thread count */
    KILN_ERROR_OUT_OF_MEMORY = 2,
    KILN_ERROR_WEIGHTS = 3,          /* external weights file missing, short or corrupt */
    KILN_ERROR_THREADS = 4,          /* the thread pool could not be started */
    KILN_ERROR_BUSY = 5,             /* the instance is already running on another thread */
    KILN_ERROR_RUNTIME = 6,          /* a kernel reported a failure (e.g. index out of range) */
    KILN_ERROR_NOT_PROFILED = 7,     /* a profiling query on a library built without profiling */
    KILN_ERROR_SHAPE = 8             /* an input's shape does not fit the model */
} kiln_status;

/* Element types; the numbering is part of the ABI. */
typedef enum kiln_dtype {
    KILN_F16 = 1, KILN_BF16 = 2, KILN_F32 = 3, KILN_F64 = 4,
    KILN_I8 = 5, KILN_I16 = 6, KILN_I32 = 7, KILN_I64 = 8,
    KILN_U8 = 9, KILN_U16 = 10, KILN_U32 = 11, KILN_U64 = 12,
    KILN_BOOL = 13
} kiln_dtype;

typedef struct kiln_tensor_info {
    const char *name;
    int32_t dtype;          /* a kiln_dtype */
    int32_t rank;
    const int64_t *shape;   /* rank extents; -1 for one known only at run time */
} kiln_tensor_info;

typedef struct kiln_instance kiln_instance;

/* ABI version the library was built for (KILN_ABI_VERSION). */
int32_t kiln_abi_version(void);

int32_t kiln_num_inputs(void);
int32_t kiln_num_outputs(void);
/* Describe input/output `index`; the strings and shapes live as long as the library. */
kiln_status kiln_input_info(int32_t index, kiln_tensor_info *info);
kiln_status kiln_output_info(int32_t index, kiln_tensor_info *info);

/* Create an instance. num_threads <= 0 means one per online CPU. weights_path is the external
 * weights file for a library compiled with --weights external (NULL: the .bin beside the
 * library); it is ignored when the weights are embedded. */
kiln_status kiln_create(int32_t num_threads, const char *weights_path, kiln_instance **out);
void kiln_destroy(kiln_instance *instance);

/* Run the model. inputs[i] points to input i's data (dense, row-major, of its dtype and shape),
 * outputs[j] to caller-owned memory of output j's size; input and output memory must not
 * overlap. */
kiln_status kiln_run(kiln_instance *instance, const void *const *inputs, void *const *outputs);

/* Run-time extents. A model compiled with symbolic dims (a batch or sequence axis left free)
 * has extents of -1 in kiln_input_info / kiln_output_info; it runs with kiln_run_shaped, which
 * takes each input's shape (rank extents, as in kiln_input_info), and kiln_run refuses it. Any
 * model may use these functions.
 *
 * kiln_infer_shapes: the output shapes that input shapes imply, without running (no instance
 * needed): output_shapes[j] receives output j's rank extents; an extent that depends on input
 * values (a NonZero count) is -1. KILN_ERROR_SHAPE when an input shape does not fit.
 *
 * kiln_run_shaped: run on inputs of the given shapes. outputs[j] is caller memory for output j
 * of the size kiln_infer_shapes implies, or, for an output with an extent of -1 in
 * kiln_output_info, NULL: the instance then holds the result until its next run. An output whose
 * shape depends on input values (-1 from kiln_infer_shapes) must be NULL. kiln_output then gives
 * where output j is and its extents (valid until the instance's next run or destruction). */
kiln_status kiln_infer_shapes(const int64_t *const *input_shapes, int64_t *const *output_shapes);
kiln_status kiln_run_shaped(kiln_instance *instance, const void *const *inputs,
                            const int64_t *const *input_shapes, void *const *outputs);
kiln_status kiln_output(kiln_instance *instance, int32_t index, const void **data,
                        const int64_t **shape);

/* The message of the last failure on this thread ("" if none). */
const char *kiln_last_error(void);

/* Profiling. A library compiled with profiling (`kiln compile --profile`, build(profile=True))
 * times every kernel call of the plan with a monotonic clock (CLOCK_MONOTONIC, nanoseconds)
 * and records trace events; one compiled without it has no timer in its code at all, and
 * answers kiln_profile_enabled() == 0, kiln_profile_num_kernels() == 0 and
 * KILN_ERROR_NOT_PROFILED from the other queries. "Kernel" below means one call of the plan,
 * index 0 .. kiln_profile_num_kernels()-1 in execution order (a kernel the plan calls twice
 * has two indices). The per-instance queries take the instance like kiln_run does: they return
 * KILN_ERROR_BUSY while it runs on another thread. */

/* Static facts about one kernel call; the strings live as long as the library. */
typedef struct kiln_kernel_info {
    const char *name;        /* the kernel's symbol */
    const char *source_ops;  /* the original graph (ONNX) nodes it implements, comma-separated;
                              * "" for a kernel of no node (an output copy) */
    int64_t flops;           /* float operations of one call (static count from the kernel IR) */
    int64_t bytes;           /* bytes of the buffers it reads or writes, each counted once */
} kiln_kernel_info;

/* One span of work: thread 0 is the thread that called kiln_run and records each kernel call
 * whole; threads 1 .. num_threads-1 are the instance's pool workers and record each chunk of a
 * parallel loop they ran, tagged with the kernel it belongs to. Times are CLOCK_MONOTONIC ns. */
typedef struct kiln_trace_event {
    int32_t kernel;
    int32_t thread;
    int64_t begin_ns;
    int64_t end_ns;
} kiln_trace_event;

/* Events an instance keeps: past this many since the last reset, the oldest are overwritten. */
#define KILN_PROFILE_TRACE_EVENTS 65536

/* 1 if the library was compiled with profiling, else 0. */
int32_t kiln_profile_enabled(void);
/* The number of kernel calls in the plan (0 without profiling). */
int32_t kiln_profile_num_kernels(void);
kiln_status kiln_profile_kernel_info(int32_t index, kiln_kernel_info *info);
/* Calls of kernel `index` and their total time since the instance was created or reset. */
kiln_status kiln_profile_counters(kiln_instance *instance, int32_t index, int64_t *calls,
                                  int64_t *total_ns);
/* kiln_run calls that ran the plan, and their total time (the plan function, wall clock). */
kiln_status kiln_profile_run_stats(kiln_instance *instance, int64_t *runs, int64_t *total_ns);
/* Zero the counters and empty the trace. */
kiln_status kiln_profile_reset(kiln_instance *instance);
/* Copy the kept trace events, oldest first (in the order they ended), into events[0 ..
 * capacity-1]; *count receives how many are kept (at most KILN_PROFILE_TRACE_EVENTS), so a
 * call with capacity 0 (events may then be NULL) sizes the buffer, and min(capacity, *count)
 * events are written. */
kiln_status kiln_profile_trace(kiln_instance *instance, kiln_trace_event *events,
                               int64_t capacity, int64_t *count);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
