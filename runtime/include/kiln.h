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

#define KILN_ABI_VERSION 1

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERROR_INVALID_ARGUMENT = 1, /* null pointer, index out of range, bad thread count */
    KILN_ERROR_OUT_OF_MEMORY = 2,
    KILN_ERROR_WEIGHTS = 3,          /* external weights file missing, short or corrupt */
    KILN_ERROR_THREADS = 4,          /* the thread pool could not be started */
    KILN_ERROR_BUSY = 5,             /* the instance is already running on another thread */
    KILN_ERROR_RUNTIME = 6           /* a kernel reported a failure (e.g. index out of range) */
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
    const int64_t *shape;   /* rank extents */
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

/* The message of the last failure on this thread ("" if none). */
const char *kiln_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
