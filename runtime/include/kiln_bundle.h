/* Kiln static bundle C API: a model compiled with `kiln compile --static` (build_bundle).
 *
 * A bundle is one relocatable object file (model.o) for boards without an operating system's
 * loader: the kernels, the static plan and these functions, plus (with --weights embed) the
 * weights. It allocates nothing, starts no thread and does no I/O: the caller provides every
 * memory region, all 64-byte aligned (KILN_BUNDLE_ALIGNMENT):
 *   - weights: the raw weights blob (model.weights.bin, KILN_MODEL_WEIGHTS_BYTES bytes, placed
 *     in flash or RAM), or NULL for a bundle compiled with --weights embed;
 *   - arena:   KILN_MODEL_ARENA_BYTES bytes of scratch memory for the activations;
 *   - inputs / outputs: one pointer per tensor, dense row-major data of its dtype and shape.
 * Parallel loops run serially on the calling thread. The only symbols the object needs from
 * outside are libm functions, memcpy/memset/memmove and the compiler's own runtime helpers
 * (libgcc, e.g. __aeabi_ldivmod on 32-bit ARM); it defines only these kiln_bundle_* functions
 * (or the names `kiln compile --static --prefix NAME` gave them: NAME_run ...).
 *
 * No function aborts: each failure returns a kiln_status (kiln.h) and kiln_bundle_last_error()
 * describes it. kiln_bundle_run keeps no state between calls other than that message, so
 * separate threads may run the bundle at once with separate arenas and outputs; the message
 * buffer is shared, though: failures of overlapping calls may mix their messages.
 *
 * The types (kiln_status, kiln_dtype, kiln_tensor_info) are those of kiln.h; its kiln_*
 * functions belong to model libraries (.so) and are not in a bundle.
 */
#ifndef KILN_BUNDLE_API_H
#define KILN_BUNDLE_API_H

#include <stdint.h>

#include "kiln.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Alignment, in bytes, of the weights blob and of the arena. */
#define KILN_BUNDLE_ALIGNMENT 64

/* Bytes of the activation arena and of the weights blob (also KILN_MODEL_ARENA_BYTES and
 * KILN_MODEL_WEIGHTS_BYTES in the model's header). */
int64_t kiln_bundle_arena_bytes(void);
int64_t kiln_bundle_weights_bytes(void);
/* 1 if the weights are inside the object (--weights embed), else 0. */
int32_t kiln_bundle_weights_embedded(void);

int32_t kiln_bundle_num_inputs(void);
int32_t kiln_bundle_num_outputs(void);
/* Describe input/output `index`; the strings and shapes are constants of the object. */
kiln_status kiln_bundle_input_info(int32_t index, kiln_tensor_info *info);
kiln_status kiln_bundle_output_info(int32_t index, kiln_tensor_info *info);

/* Verify the FNV-1a 64 checksum of a weights blob (NULL: the embedded weights) against the one
 * the model was compiled with: KILN_OK, or KILN_ERROR_WEIGHTS for another build's or a damaged
 * blob. It reads every byte once; kiln_bundle_run does not check. */
kiln_status kiln_bundle_check_weights(const void *weights);

/* Run the model. weights and arena must be 64-byte aligned (KILN_ERROR_INVALID_ARGUMENT
 * otherwise); a non-NULL weights pointer overrides embedded weights (a copy in faster memory).
 * inputs[i] points to input i's data, outputs[j] to memory for output j; input and output
 * memory must not overlap each other or the arena. KILN_ERROR_RUNTIME: a kernel reported a data
 * error (e.g. an index out of range). */
kiln_status kiln_bundle_run(const void *weights, void *arena, const void *const *inputs,
                            void *const *outputs);

/* The message of the last failure ("" if none). */
const char *kiln_bundle_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* KILN_BUNDLE_API_H */
