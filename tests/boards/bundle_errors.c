/* The bundle API's argument checks, driven by tests/boards/test_bundle.py: linked with a bundle
 * compiled with external weights (model.o, model.h on the include path), run with the path of
 * its weights file. Prints one line per case, "case status message", for the test to compare;
 * exits 1 only when the program itself cannot go on. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "model.h"

#define ALIGNED __attribute__((aligned(KILN_BUNDLE_ALIGNMENT)))

/* One spare block each, so that a deliberately misaligned pointer still has its bytes. */
static uint8_t weights[KILN_MODEL_WEIGHTS_BYTES + KILN_BUNDLE_ALIGNMENT] ALIGNED;
static uint8_t arena[KILN_MODEL_ARENA_BYTES + KILN_BUNDLE_ALIGNMENT] ALIGNED;
static uint8_t input[KILN_MODEL_IO_BYTES] ALIGNED;
static uint8_t output[KILN_MODEL_IO_BYTES] ALIGNED;

static void report(const char *name, kiln_status status) {
    printf("%s %d %s\n", name, (int)status, status == KILN_OK ? "" : kiln_bundle_last_error());
}

int main(int argc, char **argv) {
    if (argc != 2) return 1;
    FILE *file = fopen(argv[1], "rb");
    if (file == NULL || fread(weights, 1, KILN_MODEL_WEIGHTS_BYTES, file)
                            != (size_t)KILN_MODEL_WEIGHTS_BYTES) return 1;
    fclose(file);
    const void *inputs[] = {input};
    void *outputs[] = {output};
    void *no_output[] = {NULL};
    kiln_tensor_info info;

    printf("sizes %d %d %d %d\n",
           kiln_bundle_arena_bytes() == KILN_MODEL_ARENA_BYTES,
           kiln_bundle_weights_bytes() == KILN_MODEL_WEIGHTS_BYTES,
           kiln_bundle_weights_embedded() == KILN_MODEL_WEIGHTS_EMBEDDED,
           kiln_bundle_num_inputs() == KILN_NUM_INPUTS && kiln_bundle_num_outputs() == KILN_NUM_OUTPUTS);
    report("check", kiln_bundle_check_weights(weights));
    weights[KILN_MODEL_WEIGHTS_BYTES / 2] ^= 1;
    report("check_damaged", kiln_bundle_check_weights(weights));
    weights[KILN_MODEL_WEIGHTS_BYTES / 2] ^= 1;
    report("run", kiln_bundle_run(weights, arena, inputs, outputs));
    report("run_null_weights", kiln_bundle_run(NULL, arena, inputs, outputs));
    memmove(weights + 8, weights, KILN_MODEL_WEIGHTS_BYTES);
    report("run_misaligned_weights", kiln_bundle_run(weights + 8, arena, inputs, outputs));
    memmove(weights, weights + 8, KILN_MODEL_WEIGHTS_BYTES);
    report("run_misaligned_arena", kiln_bundle_run(weights, arena + 8, inputs, outputs));
    report("run_null_arena", kiln_bundle_run(weights, NULL, inputs, outputs));
    report("run_null_inputs", kiln_bundle_run(weights, arena, NULL, outputs));
    report("run_null_output", kiln_bundle_run(weights, arena, inputs, no_output));
    report("input_info_range", kiln_bundle_input_info(5, &info));
    report("output_info_null", kiln_bundle_output_info(0, NULL));
    report("run_again", kiln_bundle_run(weights, arena, inputs, outputs));
    return 0;
}
