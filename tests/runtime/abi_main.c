/* A C program using a compiled model through model.h only: queries, runs, error paths, and
 * two instances running concurrently on two threads. Prints `key value` lines for the test. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "model.h"

#define N KILN_INPUT_X_NUMEL

static float x[N], out[N];

static void report(const char *key, kiln_status status) {
    printf("%s %d %s\n", key, (int)status, status == KILN_OK ? "" : kiln_last_error());
}

typedef struct job {
    float x[N], out[N];
    int failures;
} job;

static void *run_many(void *arg) {
    job *j = arg;
    kiln_instance *inst = NULL;
    if (kiln_create(2, NULL, &inst) != KILN_OK) { j->failures = -1; return NULL; }
    int64_t idx = 1; int32_t delay = 0, chunks, nested; float sel; uint16_t h[3] = {0}, h2[3];
    const void *in[KILN_NUM_INPUTS] = {j->x, &idx, &delay, h};
    void *outs[KILN_NUM_OUTPUTS] = {j->out, &sel, &chunks, &nested, h2};
    for (int r = 0; r < 200; r++) {
        if (kiln_run(inst, in, outs) != KILN_OK || sel != j->x[1]) j->failures++;
    }
    kiln_destroy(inst);
    return NULL;
}

int main(void) {
    printf("abi %d %d\n", (int)kiln_abi_version(), KILN_ABI_VERSION);
    printf("counts %d %d %d %d\n", (int)kiln_num_inputs(), (int)kiln_num_outputs(),
           KILN_NUM_INPUTS, KILN_NUM_OUTPUTS);
    kiln_tensor_info info;
    for (int32_t i = 0; i < kiln_num_inputs(); i++) {
        kiln_input_info(i, &info);
        printf("input%d %s %d %d\n", (int)i, info.name, (int)info.dtype, (int)info.rank);
    }
    kiln_output_info(KILN_OUTPUT_OUT, &info);
    printf("output0 %s %d %lld %s\n", info.name, (int)info.dtype, (long long)info.shape[0],
           KILN_OUTPUT_OUT_NAME);
    static const int64_t shape[] = KILN_INPUT_X_SHAPE;
    printf("macros %lld %lld %d %lld\n", (long long)shape[0], (long long)KILN_INPUT_X_BYTES,
           KILN_INPUT_H_DTYPE, (long long)KILN_OUTPUT_H2_BYTES);

    report("info_bad_index", kiln_input_info(99, &info));
    report("info_negative", kiln_output_info(-1, &info));
    report("info_null", kiln_input_info(0, NULL));
    report("create_null", kiln_create(1, NULL, NULL));
    kiln_instance *inst = NULL;
    report("create_too_many", kiln_create(1 << 20, NULL, &inst));
    report("create", kiln_create(3, NULL, &inst));

    for (int i = 0; i < N; i++) x[i] = (float)i * 0.25f;
    int64_t idx = 7; int32_t delay = 0, chunks = 0, nested = 0; float sel = 0.0f;
    uint16_t h[3] = {0x3F80, 0x4000, 0xC040}, h2[3] = {0};
    const void *inputs[KILN_NUM_INPUTS] = {x, &idx, &delay, h};
    void *outputs[KILN_NUM_OUTPUTS] = {out, &sel, &chunks, &nested, h2};
    report("run", kiln_run(inst, inputs, outputs));
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += out[i];
    printf("results %.6f %.6f %d %d %d\n", sum, sel, (int)chunks, (int)nested, (int)h2[2]);

    report("run_null_instance", kiln_run(NULL, inputs, outputs));
    report("run_null_inputs", kiln_run(inst, NULL, outputs));
    report("run_null_outputs", kiln_run(inst, inputs, NULL));
    inputs[1] = NULL;
    report("run_null_input", kiln_run(inst, inputs, outputs));
    inputs[1] = &idx;
    idx = -1;
    report("run_bad_index", kiln_run(inst, inputs, outputs));
    idx = 0;
    report("run_again", kiln_run(inst, inputs, outputs));
    printf("last_error_kept %s\n", kiln_last_error());
    kiln_destroy(inst);
    kiln_destroy(NULL);

    static job jobs[2];
    pthread_t threads[2];
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < N; i++) jobs[t].x[i] = (float)(i * (t + 1));
        pthread_create(&threads[t], NULL, run_many, &jobs[t]);
    }
    for (int t = 0; t < 2; t++) pthread_join(threads[t], NULL);
    printf("threads %d %d %.1f %.1f\n", jobs[0].failures, jobs[1].failures,
           (double)jobs[0].out[10], (double)jobs[1].out[10]);
    return 0;
}
