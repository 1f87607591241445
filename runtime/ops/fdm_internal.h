/* fdm_internal.h: helpers shared by the core's own files (not public API). */
#ifndef FDM_INTERNAL_H
#define FDM_INTERNAL_H
#include "fdm.h"
#include "fdm_ops.h"
#include "fdm_autograd.h"
#include "fdm_backend.h"

fdm_tensor *fdm_make_view(fdm_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                          int64_t offset);
/* broadcast shapes of a and b into out (returns ndim, -1 + error if incompatible) */
int fdm_broadcast_shape(const char *op, const fdm_tensor *a, const fdm_tensor *b, int64_t *out);
/* copies src (any strides, any dtype) into dst (same shape, any strides, any dtype) */
void fdm_strided_copy(fdm_tensor *dst, const fdm_tensor *src);
/* a float32 contiguous version of t (new ref): for kernels */
fdm_tensor *fdm_float_contig(fdm_tensor *t);
/* op guard for in-place ops on tensors in the graph */
int fdm_check_inplace(const char *op, fdm_tensor *t);
/* big parallel loops: only fork threads when there is enough work */
#define FDM_PAR_MIN 32768
#endif
