/* Kiln C runtime: linked into every compiled model library.
 *
 * Implements the public ABI of kiln.h on top of the `kiln__model` descriptor that the generated
 * code defines (see kiln_internal.h), plus the services kernels call: a thread pool with
 * persistent workers per instance (kiln__parallel_for), run-time error reporting
 * (kiln__report_error / kiln__failed), the 64-byte aligned activation arena, loading of
 * external weights files, and in libraries compiled with profiling the per-kernel counters and
 * trace events (kiln__profile_begin / kiln__profile_end and the kiln_profile_* queries).
 * Models with run-time extents also get the run's dims, an arena that grows when a run needs
 * more (kiln__arena), buffers sized during the run (kiln__dynamic) and the shaped entry points
 * (kiln_infer_shapes, kiln_run_shaped, kiln_output).
 *
 * Profiling state exists only when the descriptor carries profiling tables; without them the
 * runtime's only trace of the feature is a null-pointer test per run and per parallel chunk.
 *
 * Nothing here aborts or exits: every failure becomes a kiln_status and a message in a
 * thread-local buffer (kiln_last_error). Only the kiln_* ABI functions have default visibility;
 * the library is compiled with -fvisibility=hidden and linked with a version script.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kiln_internal.h"

#define KILN_API __attribute__((visibility("default")))

/* More threads than this is certainly a caller bug (a negative number cast to unsigned...). */
#define KILN_MAX_THREADS 1024
/* Busy-wait iterations before a worker goes to sleep on the condition variable; waking a
 * sleeping thread costs tens of microseconds, more than many small kernels take. */
#define KILN_SPIN_ITERATIONS 20000
/* Chunks a parallel loop is split into per thread: more than one, so that a thread the OS
 * delays loses only a small share, which the others claim. */
#define KILN_CHUNKS_PER_THREAD 4
#define KILN_ERROR_BYTES 512
#define KILN_PATH_BYTES 4096

/* ------------------------------------------------------------------------------------------ */
/* Last error (per thread)                                                                     */

static __thread char tls_last_error[KILN_ERROR_BYTES];

/* Bounded copy that always terminates; snprintf would do, but this cannot fail. */
static void copy_message(char *dst, size_t size, const char *src) {
    size_t i = 0;
    if (src != NULL) {
        for (; i + 1 < size && src[i] != '\0'; i++) dst[i] = src[i];
    }
    dst[i] = '\0';
}

static kiln_status fail(kiln_status status, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static kiln_status fail(kiln_status status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int written = vsnprintf(tls_last_error, sizeof tls_last_error, format, args);
    va_end(args);
    if (written < 0) copy_message(tls_last_error, sizeof tls_last_error, format);
    return status;
}

KILN_API const char *kiln_last_error(void) { return tls_last_error; }

/* ------------------------------------------------------------------------------------------ */
/* Model queries                                                                               */

KILN_API int32_t kiln_abi_version(void) { return kiln__model.abi_version; }
KILN_API int32_t kiln_num_inputs(void) { return kiln__model.num_inputs; }
KILN_API int32_t kiln_num_outputs(void) { return kiln__model.num_outputs; }

static kiln_status tensor_info(const char *what, const kiln_tensor_info *table, int32_t count,
                               int32_t index, kiln_tensor_info *info) {
    if (info == NULL) return fail(KILN_ERROR_INVALID_ARGUMENT, "kiln_%s_info: info is NULL", what);
    if (index < 0 || index >= count) {
        return fail(KILN_ERROR_INVALID_ARGUMENT,
                    "kiln_%s_info: index %d out of range (the model has %d %ss)", what,
                    (int)index, (int)count, what);
    }
    *info = table[index];
    return KILN_OK;
}

KILN_API kiln_status kiln_input_info(int32_t index, kiln_tensor_info *info) {
    return tensor_info("input", kiln__model.inputs, kiln__model.num_inputs, index, info);
}

KILN_API kiln_status kiln_output_info(int32_t index, kiln_tensor_info *info) {
    return tensor_info("output", kiln__model.outputs, kiln__model.num_outputs, index, info);
}

/* ------------------------------------------------------------------------------------------ */
/* Instance                                                                                    */

typedef struct kiln_pool_worker {
    struct kiln_instance *instance;
    int32_t index;          /* 1 .. num_threads-1; the calling thread is chunk 0 */
    unsigned start_generation;
    pthread_t thread;
} kiln_pool_worker;

/* Profiling state of an instance. Counters and run totals are written only by the thread
 * running the plan; trace events come from every thread at once, so each one reserves its ring
 * slot with an atomic counter. Queries read all of it only while they hold the instance (no
 * run in progress), after the run's chunks have published their writes through `done`. */
typedef struct kiln_profile_state {
    int64_t *calls;              /* per kernel call of the plan */
    int64_t *total_ns;
    int64_t runs;
    int64_t run_ns;
    int64_t begin_ns;            /* start of the kernel call in progress */
    atomic_int current;          /* the kernel call in progress: its parallel chunks belong to it */
    _Atomic uint64_t recorded;   /* events since the reset; the ring keeps the newest */
    kiln_trace_event *ring;      /* KILN_PROFILE_TRACE_EVENTS slots */
} kiln_profile_state;

struct kiln_instance {
    int32_t num_threads;
    uint8_t *arena;
    int64_t arena_bytes;
    int64_t *dims;              /* the run's extents (num_dims slots) */
    void **dynamic;             /* buffers allocated during runs (num_dynamic), kept */
    int64_t *dynamic_bytes;
    int64_t *output_shapes;     /* every output's extents after the last run, in order */
    void **held;                /* outputs the instance holds for a caller that passed NULL */
    int64_t *held_bytes;
    const void **output_data;   /* where each output of the last run is */
    int has_run;                /* a run completed: kiln_output answers */
    uint8_t *owned_weights;     /* external weights, or NULL */
    const uint8_t *weights;
    atomic_int running;         /* busy detection */
    atomic_int failed;          /* a kernel reported an error during this run */
    const char *_Atomic failure_message;

    /* Thread pool: the job is published by bumping `generation` under `lock`. A job is split
     * into `job_chunks` contiguous chunks that every thread (the caller too) claims from
     * `ticket` = generation << 32 | next chunk; a claim of a finished job's ticket fails, so a
     * thread that wakes late never runs a stale chunk, and the caller waits only for claimed
     * chunks to finish (`done`), never for a worker the OS has not scheduled yet. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_uint generation;
    _Atomic uint64_t ticket;
    atomic_llong done;          /* chunks of the current job finished */
    int stop;
    kiln_parallel_body job_body;
    void *job_closure;
    int64_t job_n;
    atomic_llong job_chunks;
    int32_t num_workers;        /* started workers (num_threads - 1 once create succeeds) */
    kiln_pool_worker *workers;
    kiln_profile_state *profile; /* NULL unless the library was compiled with profiling */
};

/* Set while a thread executes a parallel body, so that nested parallel loops run serially. */
static __thread int tls_in_parallel;

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static void record_event(kiln_profile_state *prof, int32_t kernel, int32_t thread,
                         int64_t begin, int64_t end) {
    uint64_t slot = atomic_fetch_add_explicit(&prof->recorded, 1, memory_order_relaxed);
    kiln_trace_event *event = &prof->ring[slot % KILN_PROFILE_TRACE_EVENTS];
    event->kernel = kernel;
    event->thread = thread;
    event->begin_ns = begin;
    event->end_ns = end;
}

void kiln__profile_begin(void *ctx, int32_t index) {
    kiln_profile_state *prof = ((kiln_instance *)ctx)->profile;
    atomic_store_explicit(&prof->current, index, memory_order_relaxed);
    prof->begin_ns = now_ns();
}

void kiln__profile_end(void *ctx, int32_t index) {
    int64_t end = now_ns();
    kiln_profile_state *prof = ((kiln_instance *)ctx)->profile;
    prof->calls[index] += 1;
    prof->total_ns[index] += end - prof->begin_ns;
    record_event(prof, index, 0, prof->begin_ns, end);
}

static void run_chunk(kiln_instance *inst, int64_t chunk, int64_t chunks) {
    int64_t n = inst->job_n;
    /* n * chunk may overflow for n near INT64_MAX; compute the split without multiplying. */
    int64_t base = n / chunks, extra = n % chunks;
    int64_t begin = chunk * base + (chunk < extra ? chunk : extra);
    int64_t end = begin + base + (chunk < extra ? 1 : 0);
    if (begin < end) inst->job_body(inst->job_closure, begin, end);
}

/* Run a claimed chunk; a pool worker (thread > 0) of a profiling instance records it. The
 * event is written before `done` counts the chunk: once the caller sees every chunk done, the
 * run (and a query after it) may proceed, and the kernel call it belongs to may end. */
static void run_claimed(kiln_instance *inst, int64_t chunk, int64_t chunks, int32_t thread) {
    kiln_profile_state *prof = thread > 0 ? inst->profile : NULL;
    int64_t begin = prof != NULL ? now_ns() : 0;
    run_chunk(inst, chunk, chunks);
    if (prof != NULL) {
        record_event(prof, atomic_load_explicit(&prof->current, memory_order_relaxed), thread,
                     begin, now_ns());
    }
    atomic_fetch_add_explicit(&inst->done, 1, memory_order_release);
}

/* Run chunks of job `generation` until none is left to claim; `thread` is 0 for the caller,
 * the worker's index otherwise. */
static void claim_chunks(kiln_instance *inst, unsigned generation, int32_t thread) {
    uint64_t ticket = atomic_load_explicit(&inst->ticket, memory_order_acquire);
    for (;;) {
        if ((unsigned)(ticket >> 32) != generation) return;
        int64_t chunk = (int64_t)(ticket & 0xffffffffu);
        int64_t chunks = atomic_load_explicit(&inst->job_chunks, memory_order_relaxed);
        if (chunk >= chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&inst->ticket, &ticket, ticket + 1,
                                                   memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* the job's fields are stable now: it cannot end while a claimed chunk runs */
        run_claimed(inst, chunk, chunks, thread);
        ticket = atomic_load_explicit(&inst->ticket, memory_order_acquire);
    }
}

static void *worker_main(void *arg) {
    kiln_pool_worker *self = arg;
    kiln_instance *inst = self->instance;
    /* Not the current generation: a job may be published before this thread first runs. */
    unsigned seen = self->start_generation;
    tls_in_parallel = 1;
    for (;;) {
        unsigned now = seen;
        for (int spin = 0; spin < KILN_SPIN_ITERATIONS; spin++) {
            now = atomic_load_explicit(&inst->generation, memory_order_acquire);
            if (now != seen) break;
            cpu_relax();
        }
        if (now == seen) {
            pthread_mutex_lock(&inst->lock);
            while ((now = atomic_load_explicit(&inst->generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&inst->wake, &inst->lock);
            pthread_mutex_unlock(&inst->lock);
        }
        seen = now;
        if (inst->stop) return NULL;
        claim_chunks(inst, now, self->index);
    }
}

static void publish(kiln_instance *inst) {
    pthread_mutex_lock(&inst->lock);
    atomic_fetch_add_explicit(&inst->generation, 1u, memory_order_release);
    pthread_cond_broadcast(&inst->wake);
    pthread_mutex_unlock(&inst->lock);
}

static void stop_pool(kiln_instance *inst) {
    if (inst->num_workers == 0) return;
    inst->stop = 1;
    publish(inst);
    for (int32_t i = 0; i < inst->num_workers; i++) pthread_join(inst->workers[i].thread, NULL);
    inst->num_workers = 0;
}

static kiln_status start_pool(kiln_instance *inst) {
    int32_t count = inst->num_threads - 1;
    if (count == 0) return KILN_OK;
    inst->workers = calloc((size_t)count, sizeof *inst->workers);
    if (inst->workers == NULL) return fail(KILN_ERROR_OUT_OF_MEMORY, "kiln_create: out of memory");
    /* Workers inherit a fully blocked signal mask so that signals reach the host's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = 0;
    for (int32_t i = 0; i < count; i++) {
        inst->workers[i].instance = inst;
        inst->workers[i].index = i + 1;
        inst->workers[i].start_generation = atomic_load(&inst->generation);
        err = pthread_create(&inst->workers[i].thread, NULL, worker_main, &inst->workers[i]);
        if (err != 0) break;
        inst->num_workers = i + 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        stop_pool(inst);
        return fail(KILN_ERROR_THREADS, "kiln_create: could not start thread %d of %d: %s",
                    (int)inst->num_workers + 2, (int)inst->num_threads, strerror(err));
    }
    return KILN_OK;
}

void kiln__parallel_for(void *ctx, kiln_parallel_body body, void *closure, int64_t n) {
    kiln_instance *inst = ctx;
    if (n <= 0) return;
    if (tls_in_parallel || inst->num_workers == 0 || n == 1) {
        body(closure, 0, n);
        return;
    }
    int64_t chunks = (int64_t)inst->num_threads * KILN_CHUNKS_PER_THREAD;
    if (chunks > n) chunks = n;
    unsigned generation = atomic_load_explicit(&inst->generation, memory_order_relaxed) + 1u;
    /* First end every claim on the previous job (a late worker's claim then fails), then
     * fill in the job, then open its chunks. */
    atomic_store_explicit(&inst->ticket, (uint64_t)generation << 32 | 0xffffffffu,
                          memory_order_seq_cst);
    inst->job_body = body;
    inst->job_closure = closure;
    inst->job_n = n;
    atomic_store_explicit(&inst->job_chunks, chunks, memory_order_relaxed);
    atomic_store_explicit(&inst->done, 0, memory_order_relaxed);
    atomic_store_explicit(&inst->ticket, (uint64_t)generation << 32, memory_order_release);
    publish(inst);
    tls_in_parallel = 1;
    claim_chunks(inst, generation, 0);
    tls_in_parallel = 0;
    for (unsigned spin = 0; atomic_load_explicit(&inst->done, memory_order_acquire) < chunks;
         spin++) {
        if (spin < KILN_SPIN_ITERATIONS) cpu_relax();
        else sched_yield();
    }
}

void kiln__report_error(void *ctx, const char *message) {
    kiln_instance *inst = ctx;
    const char *expected = NULL;
    if (atomic_compare_exchange_strong(&inst->failure_message, &expected,
                                       message != NULL ? message : "kernel failure")) {
        atomic_store(&inst->failed, 1);
    }
}

int32_t kiln__failed(void *ctx) {
    kiln_instance *inst = ctx;
    return atomic_load_explicit(&inst->failed, memory_order_acquire) != 0;
}

/* ------------------------------------------------------------------------------------------ */
/* External weights                                                                            */

static uint64_t fnv1a64(const uint8_t *data, size_t size) {
    uint64_t hash = KILN_FNV64_OFFSET;
    for (size_t i = 0; i < size; i++) {
        hash ^= data[i];
        hash *= KILN_FNV64_PRIME;
    }
    return hash;
}

static uint64_t read_le64(const uint8_t *bytes) {
    uint64_t value = 0;
    for (int i = 7; i >= 0; i--) value = (value << 8) | bytes[i];
    return value;
}

/* The library's own path with ".so" replaced by ".bin" (or ".bin" appended). */
static kiln_status default_weights_path(char *path, size_t size) {
    Dl_info info;
    if (dladdr((const void *)&kiln__model, &info) == 0 || info.dli_fname == NULL) {
        return fail(KILN_ERROR_WEIGHTS,
                    "kiln_create: cannot locate the model library to find its weights file; "
                    "pass weights_path");
    }
    size_t length = strlen(info.dli_fname);
    if (length >= 3 && strcmp(info.dli_fname + length - 3, ".so") == 0) length -= 3;
    if (length + 5 > size) return fail(KILN_ERROR_WEIGHTS, "kiln_create: library path too long");
    memcpy(path, info.dli_fname, length);
    memcpy(path + length, ".bin", 5);
    return KILN_OK;
}

static kiln_status load_weights(kiln_instance *inst, const char *path) {
    const int64_t expected = kiln__model.weights_bytes;
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        return fail(KILN_ERROR_WEIGHTS, "kiln_create: cannot open weights file '%s': %s", path,
                    strerror(errno));
    }
    kiln_status status = KILN_OK;
    uint8_t header[KILN_WEIGHTS_HEADER_BYTES];
    struct stat st;
    if (fstat(fileno(file), &st) != 0) {
        status = fail(KILN_ERROR_WEIGHTS, "kiln_create: cannot stat weights file '%s': %s", path,
                      strerror(errno));
    } else if (fread(header, 1, sizeof header, file) != sizeof header) {
        status = fail(KILN_ERROR_WEIGHTS,
                      "kiln_create: weights file '%s' is too short for its header (%lld bytes)",
                      path, (long long)st.st_size);
    } else if (memcmp(header, KILN_WEIGHTS_MAGIC, 8) != 0) {
        status = fail(KILN_ERROR_WEIGHTS, "kiln_create: '%s' is not a Kiln weights file (bad magic)",
                      path);
    } else if (read_le64(header + 8) != (uint64_t)expected) {
        status = fail(KILN_ERROR_WEIGHTS,
                      "kiln_create: weights file '%s' holds %llu bytes but this model needs %lld "
                      "(a file from another build?)",
                      path, (unsigned long long)read_le64(header + 8), (long long)expected);
    } else if (read_le64(header + 16) != kiln__model.weights_checksum) {
        status = fail(KILN_ERROR_WEIGHTS,
                      "kiln_create: weights file '%s' has checksum %016llx but this model was "
                      "built with %016llx (a file from another build?)",
                      path, (unsigned long long)read_le64(header + 16),
                      (unsigned long long)kiln__model.weights_checksum);
    } else if ((int64_t)st.st_size != KILN_WEIGHTS_HEADER_BYTES + expected) {
        status = fail(KILN_ERROR_WEIGHTS,
                      "kiln_create: weights file '%s' is %lld bytes, expected %lld (truncated "
                      "or padded)",
                      path, (long long)st.st_size, (long long)(KILN_WEIGHTS_HEADER_BYTES + expected));
    } else {
        void *buffer = NULL;
        if (posix_memalign(&buffer, 64, expected > 0 ? (size_t)expected : 64) != 0) {
            status = fail(KILN_ERROR_OUT_OF_MEMORY,
                          "kiln_create: out of memory for %lld bytes of weights", (long long)expected);
        } else {
            inst->owned_weights = buffer;
            if (fread(buffer, 1, (size_t)expected, file) != (size_t)expected) {
                status = fail(KILN_ERROR_WEIGHTS, "kiln_create: cannot read weights file '%s'",
                              path);
            } else if (fnv1a64(buffer, (size_t)expected) != kiln__model.weights_checksum) {
                status = fail(KILN_ERROR_WEIGHTS,
                              "kiln_create: weights file '%s' is corrupt (checksum mismatch)", path);
            }
        }
    }
    fclose(file);
    inst->weights = inst->owned_weights;
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* Create / destroy / run                                                                      */

static void free_profile(kiln_profile_state *prof) {
    if (prof == NULL) return;
    free(prof->calls);
    free(prof->total_ns);
    free(prof->ring);
    free(prof);
}

static kiln_status create_profile(kiln_instance *inst) {
    const kiln_profile_desc *desc = kiln__model.profile;
    if (desc == NULL) return KILN_OK;
    size_t kernels = desc->num_kernels > 0 ? (size_t)desc->num_kernels : 1;
    kiln_profile_state *prof = calloc(1, sizeof *prof);
    if (prof != NULL) {
        prof->calls = calloc(kernels, sizeof *prof->calls);
        prof->total_ns = calloc(kernels, sizeof *prof->total_ns);
        prof->ring = calloc(KILN_PROFILE_TRACE_EVENTS, sizeof *prof->ring);
        atomic_init(&prof->current, 0);
        atomic_init(&prof->recorded, 0);
    }
    if (prof == NULL || prof->calls == NULL || prof->total_ns == NULL || prof->ring == NULL) {
        free_profile(prof);
        return fail(KILN_ERROR_OUT_OF_MEMORY, "kiln_create: out of memory for profiling");
    }
    inst->profile = prof;
    return KILN_OK;
}

KILN_API void kiln_destroy(kiln_instance *inst) {
    if (inst == NULL) return;
    stop_pool(inst);
    free_profile(inst->profile);
    free(inst->workers);
    pthread_cond_destroy(&inst->wake);
    pthread_mutex_destroy(&inst->lock);
    free(inst->owned_weights);
    free(inst->arena);
    for (int32_t i = 0; inst->dynamic != NULL && i < kiln__model.num_dynamic; i++) {
        free(inst->dynamic[i]);
    }
    free(inst->dynamic);
    free(inst->dynamic_bytes);
    free(inst->dims);
    free(inst->output_shapes);
    free(inst->output_data);
    for (int32_t j = 0; inst->held != NULL && j < kiln__model.num_outputs; j++) {
        free(inst->held[j]);
    }
    free(inst->held);
    free(inst->held_bytes);
    free(inst);
}

static void *aligned_block(int64_t bytes) {
    void *block = NULL;
    if (bytes < 64) bytes = 64;
    if (posix_memalign(&block, 64, (size_t)bytes) != 0) return NULL;
    return block;
}

uint8_t *kiln__arena(void *ctx, int64_t bytes) {
    kiln_instance *inst = ctx;
    if (bytes > inst->arena_bytes) {
        uint8_t *grown = aligned_block(bytes);
        if (grown == NULL) return NULL;
        free(inst->arena);
        inst->arena = grown;
        inst->arena_bytes = bytes;
    }
    return inst->arena;
}

void *kiln__dynamic(void *ctx, int32_t index, int64_t bytes) {
    kiln_instance *inst = ctx;
    if (bytes > inst->dynamic_bytes[index] || inst->dynamic[index] == NULL) {
        void *grown = aligned_block(bytes);
        if (grown == NULL) return NULL;
        free(inst->dynamic[index]);
        inst->dynamic[index] = grown;
        inst->dynamic_bytes[index] = bytes;
    }
    return inst->dynamic[index];
}

static int64_t output_rank_total(void) {
    int64_t total = 0;
    for (int32_t j = 0; j < kiln__model.num_outputs; j++) total += kiln__model.outputs[j].rank;
    return total;
}

static int32_t online_cpus(void) {
    long count = sysconf(_SC_NPROCESSORS_ONLN);
    if (count < 1) return 1;
    return count > KILN_MAX_THREADS ? KILN_MAX_THREADS : (int32_t)count;
}

KILN_API kiln_status kiln_create(int32_t num_threads, const char *weights_path,
                                 kiln_instance **out) {
    if (out == NULL) return fail(KILN_ERROR_INVALID_ARGUMENT, "kiln_create: out is NULL");
    *out = NULL;
    if (kiln__model.abi_version != KILN_ABI_VERSION) {
        return fail(KILN_ERROR_INVALID_ARGUMENT,
                    "kiln_create: model built for ABI version %d, runtime is version %d",
                    (int)kiln__model.abi_version, KILN_ABI_VERSION);
    }
    if (num_threads > KILN_MAX_THREADS) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, "kiln_create: num_threads %d exceeds %d",
                    (int)num_threads, KILN_MAX_THREADS);
    }
    kiln_instance *inst = calloc(1, sizeof *inst);
    if (inst == NULL) return fail(KILN_ERROR_OUT_OF_MEMORY, "kiln_create: out of memory");
    inst->num_threads = num_threads > 0 ? num_threads : online_cpus();
    atomic_init(&inst->running, 0);
    atomic_init(&inst->failed, 0);
    atomic_init(&inst->failure_message, NULL);
    atomic_init(&inst->generation, 0u);
    atomic_init(&inst->ticket, 0);
    atomic_init(&inst->done, 0);
    atomic_init(&inst->job_chunks, 0);
    if (pthread_mutex_init(&inst->lock, NULL) != 0) {
        free(inst);
        return fail(KILN_ERROR_THREADS, "kiln_create: cannot create a mutex");
    }
    if (pthread_cond_init(&inst->wake, NULL) != 0) {
        pthread_mutex_destroy(&inst->lock);
        free(inst);
        return fail(KILN_ERROR_THREADS, "kiln_create: cannot create a condition variable");
    }
    int64_t arena_bytes = kiln__model.arena_bytes > 0 ? kiln__model.arena_bytes : 64;
    for (int32_t s = 0; s < kiln__model.num_specialized; s++) {
        if (kiln__model.specialized[s].arena_bytes > arena_bytes) {
            arena_bytes = kiln__model.specialized[s].arena_bytes;
        }
    }
    void *arena = NULL;
    if (posix_memalign(&arena, 64, (size_t)arena_bytes) != 0) {
        kiln_destroy(inst);
        return fail(KILN_ERROR_OUT_OF_MEMORY, "kiln_create: out of memory for a %lld-byte arena",
                    (long long)arena_bytes);
    }
    inst->arena = arena;
    inst->arena_bytes = arena_bytes;
    int32_t slots = kiln__model.num_dims > 0 ? kiln__model.num_dims : 1;
    int32_t dynamic = kiln__model.num_dynamic > 0 ? kiln__model.num_dynamic : 1;
    int32_t outputs = kiln__model.num_outputs > 0 ? kiln__model.num_outputs : 1;
    inst->dims = calloc((size_t)slots, sizeof *inst->dims);
    inst->dynamic = calloc((size_t)dynamic, sizeof *inst->dynamic);
    inst->dynamic_bytes = calloc((size_t)dynamic, sizeof *inst->dynamic_bytes);
    inst->output_shapes = calloc((size_t)output_rank_total() + 1, sizeof *inst->output_shapes);
    inst->output_data = calloc((size_t)outputs, sizeof *inst->output_data);
    inst->held = calloc((size_t)outputs, sizeof *inst->held);
    inst->held_bytes = calloc((size_t)outputs, sizeof *inst->held_bytes);
    if (inst->dims == NULL || inst->dynamic == NULL || inst->dynamic_bytes == NULL ||
        inst->output_shapes == NULL || inst->output_data == NULL || inst->held == NULL ||
        inst->held_bytes == NULL) {
        kiln_destroy(inst);
        return fail(KILN_ERROR_OUT_OF_MEMORY, "kiln_create: out of memory");
    }

    kiln_status status = KILN_OK;
    if (kiln__model.weights_external) {
        char path[KILN_PATH_BYTES];
        if (weights_path == NULL) status = default_weights_path(path, sizeof path);
        else copy_message(path, sizeof path, weights_path);
        if (status == KILN_OK) status = load_weights(inst, path);
    } else {
        inst->weights = kiln__model.weights;
    }
    if (status == KILN_OK) status = create_profile(inst);
    if (status == KILN_OK) status = start_pool(inst);
    if (status != KILN_OK) {
        kiln_destroy(inst);
        return status;
    }
    *out = inst;
    return KILN_OK;
}

static int64_t dtype_bytes(int32_t code) {
    static const int8_t bytes[] = {0, 2, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1};
    return code > 0 && code < (int32_t)sizeof bytes ? bytes[code] : 0;
}

static int64_t element_count(const int64_t *shape, int32_t rank) {
    int64_t count = 1;
    for (int32_t d = 0; d < rank; d++) count *= shape[d];
    return count;
}

static kiln_status check_buffers(const char *what, const kiln_tensor_info *table, int32_t count,
                                 const void *const *buffers, const int64_t *const *shapes) {
    if (count == 0) return KILN_OK;
    if (buffers == NULL) return fail(KILN_ERROR_INVALID_ARGUMENT, "kiln_run: %ss is NULL", what);
    for (int32_t i = 0; i < count; i++) {
        const int64_t *shape = shapes != NULL ? shapes[i] : table[i].shape;
        if (buffers[i] == NULL && element_count(shape, table[i].rank) != 0) {
            return fail(KILN_ERROR_INVALID_ARGUMENT, "kiln_run: %s %d ('%s') is NULL", what,
                        (int)i, table[i].name);
        }
    }
    return KILN_OK;
}

/* Run the plan `run` on a held instance whose dims are bound. */
static kiln_status run_plan(kiln_instance *inst, kiln_run_fn run, const void *const *inputs,
                            void *const *outputs, const char *what) {
    atomic_store(&inst->failed, 0);
    atomic_store(&inst->failure_message, NULL);
    inst->has_run = 0;
    int64_t begin = inst->profile != NULL ? now_ns() : 0;
    int32_t code = run(inst, inputs, outputs, inst->arena, inst->weights, inst->dims);
    if (inst->profile != NULL) {
        inst->profile->runs += 1;
        inst->profile->run_ns += now_ns() - begin;
    }
    const char *message = atomic_load(&inst->failure_message);
    if (message != NULL) return fail(KILN_ERROR_RUNTIME, "%s: %s", what, message);
    if (code == 2) return fail(KILN_ERROR_OUT_OF_MEMORY, "%s: out of memory for the run", what);
    if (code != 0) return fail(KILN_ERROR_RUNTIME, "%s: the model failed with code %d", what, (int)code);
    inst->has_run = 1;
    return KILN_OK;
}

static kiln_status take(kiln_instance *inst, const char *what) {
    int idle = 0;
    if (!atomic_compare_exchange_strong(&inst->running, &idle, 1)) {
        return fail(KILN_ERROR_BUSY,
                    "%s: the instance is already running on another thread (use one "
                    "instance per thread)", what);
    }
    return KILN_OK;
}

KILN_API kiln_status kiln_run(kiln_instance *inst, const void *const *inputs,
                              void *const *outputs) {
    if (inst == NULL) return fail(KILN_ERROR_INVALID_ARGUMENT, "kiln_run: instance is NULL");
    if (kiln__model.bind != NULL) {
        /* Run-time extents inside a model whose inputs and outputs have fixed shapes (a NonZero
         * between them): the shaped run with the fixed input shapes. */
        const int64_t *shapes[64];
        int32_t n = kiln__model.num_inputs;
        int fixed = n <= 64;
        for (int32_t i = 0; fixed && i < n; i++) {
            shapes[i] = kiln__model.inputs[i].shape;
            for (int32_t d = 0; d < kiln__model.inputs[i].rank; d++) fixed &= shapes[i][d] >= 0;
        }
        for (int32_t j = 0; fixed && j < kiln__model.num_outputs; j++) {
            for (int32_t d = 0; d < kiln__model.outputs[j].rank; d++) {
                fixed &= kiln__model.outputs[j].shape[d] >= 0;
            }
        }
        if (!fixed) {
            return fail(KILN_ERROR_INVALID_ARGUMENT,
                        "kiln_run: the model has inputs or outputs whose shapes are known only "
                        "at run time; run it with kiln_run_shaped");
        }
        return kiln_run_shaped(inst, inputs, shapes, outputs);
    }
    kiln_status status = check_buffers("input", kiln__model.inputs, kiln__model.num_inputs,
                                       inputs, NULL);
    if (status == KILN_OK) {
        status = check_buffers("output", kiln__model.outputs, kiln__model.num_outputs,
                               (const void *const *)outputs, NULL);
    }
    if (status == KILN_OK) status = take(inst, "kiln_run");
    if (status != KILN_OK) return status;
    status = run_plan(inst, kiln__model.run, inputs, outputs, "kiln_run");
    for (int32_t j = 0; status == KILN_OK && j < kiln__model.num_outputs; j++) {
        inst->output_data[j] = outputs[j];
    }
    atomic_store(&inst->running, 0);
    return status;
}

/* Bind input shapes into `dims` (static models: compare with the fixed shapes). */
static kiln_status bind_shapes(const char *what, const int64_t *const *shapes, int64_t *dims) {
    if (kiln__model.num_inputs > 0 && shapes == NULL) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: input_shapes is NULL", what);
    }
    for (int32_t i = 0; i < kiln__model.num_inputs; i++) {
        if (shapes[i] == NULL && kiln__model.inputs[i].rank > 0) {
            return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: input_shapes[%d] ('%s') is NULL", what,
                        (int)i, kiln__model.inputs[i].name);
        }
    }
    int64_t info[5] = {0, 0, 0, 0, -1};
    int32_t code = 0;
    if (kiln__model.bind != NULL) {
        code = kiln__model.bind(shapes, dims, info);
    } else {
        for (int32_t i = 0; code == 0 && i < kiln__model.num_inputs; i++) {
            for (int32_t d = 0; d < kiln__model.inputs[i].rank; d++) {
                if (shapes[i][d] != kiln__model.inputs[i].shape[d]) {
                    int64_t found[5] = {i, d, shapes[i][d], kiln__model.inputs[i].shape[d], -1};
                    memcpy(info, found, sizeof info);
                    code = KILN_BIND_EXTENT;
                    break;
                }
            }
        }
    }
    if (code == 0) return KILN_OK;
    const char *name = kiln__model.inputs[info[0]].name;
    if (code == KILN_BIND_BOUNDS) {
        return fail(KILN_ERROR_SHAPE,
                    "%s: input '%s' axis %lld has extent %lld, outside the bounds %lld..%lld the "
                    "model was compiled for", what, name, (long long)info[1], (long long)info[2],
                    (long long)info[3], (long long)info[4]);
    }
    if (code == KILN_BIND_EMPTY) {
        return fail(KILN_ERROR_SHAPE,
                    "%s: input '%s' axis %lld has extent %lld; the model was compiled with this "
                    "axis free, which needs an extent of at least 1", what, name,
                    (long long)info[1], (long long)info[2]);
    }
    return fail(KILN_ERROR_SHAPE, "%s: input '%s' axis %lld has extent %lld, expected %lld",
                what, name, (long long)info[1], (long long)info[2], (long long)info[3]);
}

/* Every output's extents, in order, into `out` (before_run: -1 for value-dependent ones). */
static void output_shapes(const int64_t *dims, int32_t before_run, int64_t *out) {
    if (kiln__model.shapes != NULL) {
        kiln__model.shapes(dims, before_run, out);
        return;
    }
    for (int32_t j = 0; j < kiln__model.num_outputs; j++) {
        const kiln_tensor_info *info = &kiln__model.outputs[j];
        memcpy(out, info->shape, (size_t)info->rank * sizeof *out);
        out += info->rank;
    }
}

KILN_API kiln_status kiln_infer_shapes(const int64_t *const *input_shapes,
                                       int64_t *const *output_shapes_out) {
    const char *what = "kiln_infer_shapes";
    if (kiln__model.num_outputs > 0 && output_shapes_out == NULL) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: output_shapes is NULL", what);
    }
    int32_t slots = kiln__model.num_dims > 0 ? kiln__model.num_dims : 1;
    int64_t *dims = calloc((size_t)slots, sizeof *dims);
    int64_t *all = calloc((size_t)output_rank_total() + 1, sizeof *all);
    kiln_status status = dims == NULL || all == NULL
        ? fail(KILN_ERROR_OUT_OF_MEMORY, "%s: out of memory", what)
        : bind_shapes(what, input_shapes, dims);
    if (status == KILN_OK) {
        output_shapes(dims, 1, all);
        const int64_t *next = all;
        for (int32_t j = 0; j < kiln__model.num_outputs; j++) {
            int32_t rank = kiln__model.outputs[j].rank;
            if (output_shapes_out[j] == NULL && rank > 0) {
                status = fail(KILN_ERROR_INVALID_ARGUMENT, "%s: output_shapes[%d] is NULL", what,
                              (int)j);
                break;
            }
            if (rank > 0) memcpy(output_shapes_out[j], next, (size_t)rank * sizeof *next);
            next += rank;
        }
    }
    free(dims);
    free(all);
    return status;
}

/* The specialized plan whose input shapes are `shapes`, else the general plan. */
static kiln_run_fn plan_for(const int64_t *const *shapes) {
    for (int32_t s = 0; s < kiln__model.num_specialized; s++) {
        const int64_t *extents = kiln__model.specialized[s].input_extents;
        int match = 1;
        for (int32_t i = 0; match && i < kiln__model.num_inputs; i++) {
            for (int32_t d = 0; match && d < kiln__model.inputs[i].rank; d++) {
                match = shapes[i][d] == *extents++;
            }
        }
        if (match) return kiln__model.specialized[s].run;
    }
    return kiln__model.run;
}

KILN_API kiln_status kiln_run_shaped(kiln_instance *inst, const void *const *inputs,
                                     const int64_t *const *input_shapes, void *const *outputs) {
    const char *what = "kiln_run_shaped";
    if (inst == NULL) return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: instance is NULL", what);
    int32_t num_outputs = kiln__model.num_outputs;
    if (num_outputs > 0 && outputs == NULL) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: outputs is NULL", what);
    }
    kiln_status status = take(inst, what);
    if (status != KILN_OK) return status;
    status = bind_shapes(what, input_shapes, inst->dims);
    if (status == KILN_OK) {
        status = check_buffers("input", kiln__model.inputs, kiln__model.num_inputs, inputs,
                               input_shapes);
    }
    /* Outputs sized by the input shapes go to the caller's memory, or to memory the instance
     * holds when the caller passed NULL; those whose shape needs values are the plan's own
     * (dynamic buffers), copied to the caller's memory only when it gave some. */
    void *stack_outputs[16];
    void **targets = num_outputs <= 16 ? stack_outputs
                                       : malloc((size_t)num_outputs * sizeof *targets);
    if (status == KILN_OK && targets == NULL) {
        status = fail(KILN_ERROR_OUT_OF_MEMORY, "%s: out of memory", what);
    }
    int64_t *expected = inst->output_shapes;
    if (status == KILN_OK) output_shapes(inst->dims, 1, expected);
    for (int32_t j = 0, at = 0; status == KILN_OK && j < num_outputs; j++) {
        const kiln_tensor_info *info = &kiln__model.outputs[j];
        int by_values = kiln__model.output_dynamic != NULL && kiln__model.output_dynamic[j] >= 0;
        int64_t bytes = element_count(expected + at, info->rank) * dtype_bytes(info->dtype);
        targets[j] = outputs[j];
        if (by_values && outputs[j] != NULL) {
            status = fail(KILN_ERROR_INVALID_ARGUMENT,
                          "%s: output %d ('%s') has a shape that depends on input values; pass "
                          "NULL and read it with kiln_output", what, (int)j, info->name);
        } else if (!by_values && outputs[j] == NULL && bytes > 0) {
            if (kiln__model.bind == NULL) {
                status = fail(KILN_ERROR_INVALID_ARGUMENT, "%s: output %d ('%s') is NULL", what,
                              (int)j, info->name);
            } else if (bytes > inst->held_bytes[j] || inst->held[j] == NULL) {
                void *grown = aligned_block(bytes);
                if (grown == NULL) {
                    status = fail(KILN_ERROR_OUT_OF_MEMORY, "%s: out of memory", what);
                } else {
                    free(inst->held[j]);
                    inst->held[j] = grown;
                    inst->held_bytes[j] = bytes;
                }
            }
            if (status == KILN_OK) targets[j] = inst->held[j];
        }
        at += info->rank;
    }
    if (status == KILN_OK) status = run_plan(inst, plan_for(input_shapes), inputs, targets, what);
    if (status == KILN_OK) {
        if (kiln__model.num_dynamic > 0) output_shapes(inst->dims, 0, inst->output_shapes);
        const int64_t *shape = inst->output_shapes;
        for (int32_t j = 0; j < num_outputs; j++) {
            int32_t rank = kiln__model.outputs[j].rank;
            int32_t buffer = kiln__model.output_dynamic != NULL ? kiln__model.output_dynamic[j]
                                                                : -1;
            inst->output_data[j] = buffer < 0 ? targets[j] : inst->dynamic[buffer];
            shape += rank;
        }
    }
    if (targets != stack_outputs) free(targets);
    atomic_store(&inst->running, 0);
    return status;
}

KILN_API kiln_status kiln_output(kiln_instance *inst, int32_t index, const void **data,
                                 const int64_t **shape) {
    const char *what = "kiln_output";
    if (inst == NULL || data == NULL || shape == NULL) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: instance, data or shape is NULL", what);
    }
    if (index < 0 || index >= kiln__model.num_outputs) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: index %d out of range (the model has %d "
                    "outputs)", what, (int)index, (int)kiln__model.num_outputs);
    }
    kiln_status status = take(inst, what);
    if (status != KILN_OK) return status;
    if (!inst->has_run) {
        status = fail(KILN_ERROR_INVALID_ARGUMENT, "%s: the instance has no completed run", what);
    } else {
        const int64_t *at = inst->output_shapes;
        for (int32_t j = 0; j < index; j++) at += kiln__model.outputs[j].rank;
        *shape = kiln__model.bind != NULL ? at : kiln__model.outputs[index].shape;
        *data = inst->output_data[index];
    }
    atomic_store(&inst->running, 0);
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* Profiling queries                                                                           */

KILN_API int32_t kiln_profile_enabled(void) { return kiln__model.profile != NULL; }

KILN_API int32_t kiln_profile_num_kernels(void) {
    return kiln__model.profile != NULL ? kiln__model.profile->num_kernels : 0;
}

static kiln_status not_profiled(const char *what) {
    return fail(KILN_ERROR_NOT_PROFILED,
                "%s: the model was compiled without profiling (compile it with --profile)", what);
}

static kiln_status check_kernel_index(const char *what, int32_t index) {
    int32_t count = kiln__model.profile->num_kernels;
    if (index < 0 || index >= count) {
        return fail(KILN_ERROR_INVALID_ARGUMENT,
                    "%s: kernel index %d out of range (the plan has %d kernel calls)", what,
                    (int)index, (int)count);
    }
    return KILN_OK;
}

KILN_API kiln_status kiln_profile_kernel_info(int32_t index, kiln_kernel_info *info) {
    const char *what = "kiln_profile_kernel_info";
    if (kiln__model.profile == NULL) return not_profiled(what);
    if (info == NULL) return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: info is NULL", what);
    kiln_status status = check_kernel_index(what, index);
    if (status == KILN_OK) *info = kiln__model.profile->kernels[index];
    return status;
}

/* Take the instance for a query (as kiln_run does), so that no run writes what it reads. */
static kiln_status hold(kiln_instance *inst, const char *what) {
    if (kiln__model.profile == NULL) return not_profiled(what);
    if (inst == NULL) return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: instance is NULL", what);
    int idle = 0;
    if (!atomic_compare_exchange_strong(&inst->running, &idle, 1)) {
        return fail(KILN_ERROR_BUSY, "%s: the instance is running on another thread", what);
    }
    return KILN_OK;
}

static void release(kiln_instance *inst) { atomic_store(&inst->running, 0); }

KILN_API kiln_status kiln_profile_counters(kiln_instance *inst, int32_t index, int64_t *calls,
                                           int64_t *total_ns) {
    const char *what = "kiln_profile_counters";
    if (kiln__model.profile != NULL && (calls == NULL || total_ns == NULL)) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: calls or total_ns is NULL", what);
    }
    kiln_status status = hold(inst, what);
    if (status != KILN_OK) return status;
    status = check_kernel_index(what, index);
    if (status == KILN_OK) {
        *calls = inst->profile->calls[index];
        *total_ns = inst->profile->total_ns[index];
    }
    release(inst);
    return status;
}

KILN_API kiln_status kiln_profile_run_stats(kiln_instance *inst, int64_t *runs,
                                            int64_t *total_ns) {
    const char *what = "kiln_profile_run_stats";
    if (kiln__model.profile != NULL && (runs == NULL || total_ns == NULL)) {
        return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: runs or total_ns is NULL", what);
    }
    kiln_status status = hold(inst, what);
    if (status != KILN_OK) return status;
    *runs = inst->profile->runs;
    *total_ns = inst->profile->run_ns;
    release(inst);
    return KILN_OK;
}

KILN_API kiln_status kiln_profile_reset(kiln_instance *inst) {
    kiln_status status = hold(inst, "kiln_profile_reset");
    if (status != KILN_OK) return status;
    kiln_profile_state *prof = inst->profile;
    size_t kernels = (size_t)kiln__model.profile->num_kernels;
    if (kernels > 0) {
        memset(prof->calls, 0, kernels * sizeof *prof->calls);
        memset(prof->total_ns, 0, kernels * sizeof *prof->total_ns);
    }
    prof->runs = 0;
    prof->run_ns = 0;
    atomic_store(&prof->recorded, 0);
    release(inst);
    return KILN_OK;
}

KILN_API kiln_status kiln_profile_trace(kiln_instance *inst, kiln_trace_event *events,
                                        int64_t capacity, int64_t *count) {
    const char *what = "kiln_profile_trace";
    if (kiln__model.profile != NULL) {
        if (count == NULL) return fail(KILN_ERROR_INVALID_ARGUMENT, "%s: count is NULL", what);
        if (capacity < 0 || (capacity > 0 && events == NULL)) {
            return fail(KILN_ERROR_INVALID_ARGUMENT,
                        "%s: events is NULL or capacity %lld is negative", what,
                        (long long)capacity);
        }
    }
    kiln_status status = hold(inst, what);
    if (status != KILN_OK) return status;
    kiln_profile_state *prof = inst->profile;
    uint64_t recorded = atomic_load(&prof->recorded);
    uint64_t kept = recorded < KILN_PROFILE_TRACE_EVENTS ? recorded : KILN_PROFILE_TRACE_EVENTS;
    uint64_t first = recorded - kept;
    uint64_t written = (uint64_t)capacity < kept ? (uint64_t)capacity : kept;
    for (uint64_t i = 0; i < written; i++) {
        events[i] = prof->ring[(first + i) % KILN_PROFILE_TRACE_EVENTS];
    }
    *count = (int64_t)kept;
    release(inst);
    return KILN_OK;
}
