/* Profiling a model from C, with no Python: the kiln_profile_* functions of any model library.
 *
 *     cc -I runtime/include profile_abi.c ./model.so -o profile_abi && ./profile_abi THREADS RUNS
 *
 * Runs the model RUNS times on zero-filled inputs with a THREADS-thread instance, then prints
 * `key value...` lines: the kernel table, each kernel's counters, the run totals, the trace
 * events, the status and message of each error path, and the state after a reset. Fields of a
 * kernel line are tab-separated (names may hold spaces).
 */
#include <stdio.h>
#include <stdlib.h>

#include "kiln.h"

static size_t tensor_bytes(const kiln_tensor_info *info) {
    size_t n = info->dtype == KILN_F64 || info->dtype == KILN_I64 || info->dtype == KILN_U64 ? 8
               : info->dtype == KILN_F32 || info->dtype == KILN_I32 || info->dtype == KILN_U32 ? 4
               : info->dtype == KILN_I8 || info->dtype == KILN_U8 || info->dtype == KILN_BOOL ? 1
               : 2;
    for (int32_t d = 0; d < info->rank; d++) n *= (size_t)info->shape[d];
    return n;
}

static void status(const char *key, kiln_status code) {
    printf("%s %d %s\n", key, (int)code, code == KILN_OK ? "" : kiln_last_error());
}

static void *zeros(int32_t count, int output) {
    void **buffers = calloc((size_t)count + 1, sizeof(void *));
    for (int32_t i = 0; buffers != NULL && i < count; i++) {
        kiln_tensor_info info;
        if ((output ? kiln_output_info(i, &info) : kiln_input_info(i, &info)) != KILN_OK) exit(3);
        buffers[i] = calloc(tensor_bytes(&info) + 1, 1);
        if (buffers[i] == NULL) exit(3);
    }
    return buffers;
}

static void print_trace(const char *key, kiln_instance *inst) {
    int64_t count = -1;
    kiln_status code = kiln_profile_trace(inst, NULL, 0, &count);
    status(key, code);
    if (code != KILN_OK) return;
    kiln_trace_event *events = calloc((size_t)count + 1, sizeof *events);
    if (events == NULL) exit(3);
    int64_t kept = -1;
    if (kiln_profile_trace(inst, events, count, &kept) != KILN_OK) exit(4);
    printf("%s_count %lld %lld\n", key, (long long)count, (long long)kept);
    for (int64_t i = 0; i < kept; i++) {
        printf("event %d %d %lld %lld\n", (int)events[i].kernel, (int)events[i].thread,
               (long long)events[i].begin_ns, (long long)events[i].end_ns);
    }
    free(events);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS RUNS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]), runs = atoi(argv[2]);
    int32_t kernels = kiln_profile_num_kernels();
    printf("enabled %d\nkernels %d\n", (int)kiln_profile_enabled(), (int)kernels);
    for (int32_t i = 0; i < kernels; i++) {
        kiln_kernel_info info;
        if (kiln_profile_kernel_info(i, &info) != KILN_OK) return 4;
        printf("kernel %d\t%s\t%s\t%lld\t%lld\n", (int)i, info.name, info.source_ops,
               (long long)info.flops, (long long)info.bytes);
    }
    kiln_kernel_info info;
    status("info_bad_index", kiln_profile_kernel_info(kernels, &info));
    status("info_null", kiln_profile_kernel_info(0, NULL));

    kiln_instance *inst = NULL;
    if (kiln_create(threads, NULL, &inst) != KILN_OK) {
        fprintf(stderr, "create: %s\n", kiln_last_error());
        return 1;
    }
    void **inputs = zeros(kiln_num_inputs(), 0), **outputs = zeros(kiln_num_outputs(), 1);
    for (int r = 0; r < runs; r++) {
        if (kiln_run(inst, (const void *const *)inputs, outputs) != KILN_OK) {
            fprintf(stderr, "run: %s\n", kiln_last_error());
            return 1;
        }
    }
    int64_t calls = -1, total = -1;
    for (int32_t i = 0; i < kernels; i++) {
        if (kiln_profile_counters(inst, i, &calls, &total) != KILN_OK) return 4;
        printf("counters %d %lld %lld\n", (int)i, (long long)calls, (long long)total);
    }
    status("run_stats_status", kiln_profile_run_stats(inst, &calls, &total));
    printf("run_stats %lld %lld\n", (long long)calls, (long long)total);
    print_trace("trace", inst);

    status("counters_bad_index", kiln_profile_counters(inst, -1, &calls, &total));
    status("counters_null", kiln_profile_counters(inst, 0, NULL, &total));
    status("counters_null_instance", kiln_profile_counters(NULL, 0, &calls, &total));
    status("run_stats_null", kiln_profile_run_stats(inst, NULL, &total));
    status("trace_null_count", kiln_profile_trace(inst, NULL, 0, NULL));
    status("trace_null_events", kiln_profile_trace(inst, NULL, 4, &calls));
    status("trace_negative", kiln_profile_trace(inst, NULL, -1, &calls));
    status("reset_null", kiln_profile_reset(NULL));

    status("reset", kiln_profile_reset(inst));
    calls = total = -1;
    kiln_profile_run_stats(inst, &calls, &total);
    printf("reset_run_stats %lld %lld\n", (long long)calls, (long long)total);
    print_trace("reset_trace", inst);
    kiln_destroy(inst);
    return 0;
}
