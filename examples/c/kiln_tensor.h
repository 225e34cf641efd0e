/* Tensor helpers shared by the example programs (kiln_run.c, ../boards/run_bundle.c): the byte
 * size of a tensor described by a kiln_tensor_info, and printing its name, dtype and shape.
 * Include after the model's API header (kiln.h or a bundle's model.h), which defines
 * kiln_tensor_info and the dtype codes. */
#ifndef KILN_EXAMPLE_TENSOR_H
#define KILN_EXAMPLE_TENSOR_H

#include <stddef.h>
#include <stdio.h>

static size_t dtype_size(int32_t dtype) {
    switch (dtype) {
    case KILN_F64: case KILN_I64: case KILN_U64: return 8;
    case KILN_F32: case KILN_I32: case KILN_U32: return 4;
    case KILN_F16: case KILN_BF16: case KILN_I16: case KILN_U16: return 2;
    default: return 1;
    }
}

static size_t tensor_bytes(const kiln_tensor_info *info) {
    size_t n = dtype_size(info->dtype);
    for (int32_t d = 0; d < info->rank; ++d) n *= (size_t)info->shape[d];
    return n;
}

static void describe(const char *role, const kiln_tensor_info *info) {
    printf("%s %s dtype=%d shape=[", role, info->name, (int)info->dtype);
    for (int32_t d = 0; d < info->rank; ++d) printf(d ? ",%lld" : "%lld", (long long)info->shape[d]);
    printf("]\n");
}

#endif /* KILN_EXAMPLE_TENSOR_H */
