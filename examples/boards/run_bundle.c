/* Deploy a Kiln static bundle: every buffer static, sized by the model header, no allocator
 * and no threads.
 *
 * Compile the model into model.o + model.h (+ model.weights.bin), then link this program
 * with it (model.h must be on the include path):
 *     kiln compile model.onnx --target aarch64-linux-gnu --static -o model.o
 *     aarch64-linux-gnu-gcc -O2 -I . run_bundle.c model.o -o run_bundle -lm -static
 * Run it with the weights file (left out for a bundle compiled with --weights embed), then one
 * raw little-endian file per model input and one output path per model output (model order;
 * each file holds the tensor's elements, dense and row-major):
 *     qemu-aarch64 ./run_bundle model.weights.bin in.raw out.raw
 * Prints each input's and output's name, dtype code and shape; exits 1 with the bundle's
 * message on any error, 2 on a wrong argument count. stdio only reads and writes the files:
 * on a board the weights would sit in flash and the input would come from a sensor.
 */
#include <stdint.h>
#include <stdio.h>

#include "model.h"
#include "../c/kiln_tensor.h"

#define ALIGNED __attribute__((aligned(KILN_BUNDLE_ALIGNMENT)))
/* C has no zero-length arrays: a model needing no arena (or weights) still gets one block. */
#define AT_LEAST_ONE_BLOCK(bytes) ((bytes) > 0 ? (bytes) : KILN_BUNDLE_ALIGNMENT)

static uint8_t arena[AT_LEAST_ONE_BLOCK(KILN_MODEL_ARENA_BYTES)] ALIGNED;
/* The inputs and outputs, each at a 64-byte aligned offset. */
static uint8_t io[AT_LEAST_ONE_BLOCK(KILN_MODEL_IO_BYTES)] ALIGNED;
#if !KILN_MODEL_WEIGHTS_EMBEDDED
static uint8_t weights[AT_LEAST_ONE_BLOCK(KILN_MODEL_WEIGHTS_BYTES)] ALIGNED;
#endif

static const void *inputs[KILN_NUM_INPUTS + 1];
static void *outputs[KILN_NUM_OUTPUTS + 1];

static int fail(const char *what) {
    fprintf(stderr, "run_bundle: %s: %s\n", what, kiln_bundle_last_error());
    return 1;
}

/* Read exactly `bytes` bytes: a longer or shorter file is an error. */
static int read_exactly(const char *path, void *data, size_t bytes) {
    FILE *file = fopen(path, "rb");
    int ok = file != NULL && fread(data, 1, bytes, file) == bytes && fgetc(file) == EOF;
    if (file != NULL) fclose(file);
    if (!ok) fprintf(stderr, "run_bundle: %s does not hold exactly %zu bytes\n", path, bytes);
    return ok;
}

static int write_all(const char *path, const void *data, size_t bytes) {
    FILE *file = fopen(path, "wb");
    int ok = file != NULL && fwrite(data, 1, bytes, file) == bytes;
    if (file != NULL && fclose(file) != 0) ok = 0;
    if (!ok) fprintf(stderr, "run_bundle: cannot write %s\n", path);
    return ok;
}

/* The next tensor's place in `io`, after `*offset` rounded up to the alignment. */
static uint8_t *place(size_t *offset, size_t bytes) {
    uint8_t *at = io + *offset;
    *offset += (bytes + KILN_BUNDLE_ALIGNMENT - 1) / KILN_BUNDLE_ALIGNMENT * KILN_BUNDLE_ALIGNMENT;
    return at;
}

int main(int argc, char **argv) {
    const int32_t n_in = kiln_bundle_num_inputs(), n_out = kiln_bundle_num_outputs();
    const int embedded = kiln_bundle_weights_embedded();
    if (argc - 1 != !embedded + n_in + n_out) {
        fprintf(stderr, "usage: %s %s<%d input files> <%d output files>\n", argv[0],
                embedded ? "" : "MODEL.weights.bin ", (int)n_in, (int)n_out);
        return 2;
    }
    char **files = argv + 1;
    const void *blob = NULL; /* NULL: the weights inside the bundle */
#if !KILN_MODEL_WEIGHTS_EMBEDDED
    if (!read_exactly(*files++, weights, (size_t)KILN_MODEL_WEIGHTS_BYTES)) return 1;
    if (kiln_bundle_check_weights(weights) != KILN_OK) return fail("weights");
    blob = weights;
#endif
    size_t offset = 0;
    kiln_tensor_info out_info[KILN_NUM_OUTPUTS + 1];
    for (int32_t i = 0; i < n_in; ++i) {
        kiln_tensor_info info;
        if (kiln_bundle_input_info(i, &info) != KILN_OK) return fail("input info");
        describe("input", &info);
        size_t bytes = tensor_bytes(&info);
        uint8_t *data = place(&offset, bytes);
        if (!read_exactly(*files++, data, bytes)) return 1;
        inputs[i] = data;
    }
    for (int32_t j = 0; j < n_out; ++j) {
        if (kiln_bundle_output_info(j, &out_info[j]) != KILN_OK) return fail("output info");
        describe("output", &out_info[j]);
        outputs[j] = place(&offset, tensor_bytes(&out_info[j]));
    }
    if (kiln_bundle_run(blob, arena, inputs, outputs) != KILN_OK) return fail("run");
    for (int32_t j = 0; j < n_out; ++j) {
        if (!write_all(*files++, outputs[j], tensor_bytes(&out_info[j]))) return 1;
    }
    return 0;
}
