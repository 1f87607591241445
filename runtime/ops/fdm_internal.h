/* fdm_internal.h: helpers shared by the ops (runtime/ops/), not public API.
** Ops check arguments, allocate through the backend, call one kernel per
** step through FDM_KERNEL and record autograd nodes; they never read or
** write tensor data themselves (tests/layering_spec.lua checks the objects). */
#ifndef FDM_INTERNAL_H
#define FDM_INTERNAL_H
#include "fdm.h"
#include "fdm_ops.h"
#include "fdm_autograd.h"
#include "fdm_backend.h"

/* broadcast shapes of a and b into out (returns ndim, -1 + error if incompatible) */
int fdm_broadcast_shape(const char *op, const fdm_tensor *a, const fdm_tensor *b, int64_t *out);
/* copies src (any strides, any dtype, broadcast to dst's shape) into dst on dst's device */
int fdm_strided_copy(fdm_tensor *dst, const fdm_tensor *src);
/* sum g down to input i's recorded shape (undoing broadcasting); new ref */
fdm_tensor *fdm_reduce_to_input(fdm_node *n, int i, fdm_tensor *g);
/* a scratch float32 buffer of n floats on dev (conv workspaces) */
fdm_tensor *fdm_scratch(fdm_device dev, size_t nfloats);
#endif
