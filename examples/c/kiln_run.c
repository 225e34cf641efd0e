/* Run any Kiln-compiled model from C, with no Python.
 *
 * Build, linking the model library (here model.so in the current folder):
 *     cc -O2 -I runtime/include kiln_run.c -o kiln_run ./model.so -Wl,-rpath,'$ORIGIN'
 * Run with one raw little-endian input file per model input (in model order) and one output
 * path per model output; each file holds the tensor's elements, dense and row-major:
 *     ./kiln_run --threads 2 in0.raw out0.raw
 * Prints each input's and output's name, dtype code and shape; exits 1 with the ABI's message
 * on any error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "kiln_tensor.h"

static int fail(const char *what) {
    fprintf(stderr, "kiln_run: %s: %s\n", what, kiln_last_error());
    return 1;
}

int main(int argc, char **argv) {
    int threads = 0, arg = 1;
    if (argc > 2 && strcmp(argv[1], "--threads") == 0) { threads = atoi(argv[2]); arg = 3; }
    int32_t n_in = kiln_num_inputs(), n_out = kiln_num_outputs();
    if (argc - arg != n_in + n_out) {
        fprintf(stderr, "usage: %s [--threads N] <%d input files> <%d output files>\n",
                argv[0], (int)n_in, (int)n_out);
        return 2;
    }
    void **inputs = calloc((size_t)n_in + 1, sizeof(void *));
    void **outputs = calloc((size_t)n_out + 1, sizeof(void *));
    kiln_tensor_info *out_info = calloc((size_t)n_out + 1, sizeof(kiln_tensor_info));
    if (!inputs || !outputs || !out_info) { fprintf(stderr, "kiln_run: out of memory\n"); return 1; }
    for (int32_t i = 0; i < n_in; ++i) {
        kiln_tensor_info info;
        if (kiln_input_info(i, &info) != KILN_OK) return fail("input info");
        describe("input", &info);
        size_t bytes = tensor_bytes(&info);
        inputs[i] = malloc(bytes ? bytes : 1);
        FILE *f = fopen(argv[arg + i], "rb");
        if (!f || !inputs[i] || fread(inputs[i], 1, bytes, f) != bytes) {
            fprintf(stderr, "kiln_run: cannot read %zu bytes from %s\n", bytes, argv[arg + i]);
            return 1;
        }
        fclose(f);
    }
    for (int32_t j = 0; j < n_out; ++j) {
        if (kiln_output_info(j, &out_info[j]) != KILN_OK) return fail("output info");
        describe("output", &out_info[j]);
        size_t bytes = tensor_bytes(&out_info[j]);
        outputs[j] = malloc(bytes ? bytes : 1);
        if (!outputs[j]) { fprintf(stderr, "kiln_run: out of memory\n"); return 1; }
    }
    kiln_instance *instance = NULL;
    if (kiln_create(threads, NULL, &instance) != KILN_OK) return fail("create");
    if (kiln_run(instance, (const void *const *)inputs, outputs) != KILN_OK) return fail("run");
    kiln_destroy(instance);
    for (int32_t j = 0; j < n_out; ++j) {
        FILE *f = fopen(argv[arg + n_in + j], "wb");
        size_t bytes = tensor_bytes(&out_info[j]);
        if (!f || fwrite(outputs[j], 1, bytes, f) != bytes) {
            fprintf(stderr, "kiln_run: cannot write %s\n", argv[arg + n_in + j]);
            return 1;
        }
        fclose(f);
    }
    return 0;
}
