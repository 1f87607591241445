/* tensor.c: tensor and storage lifetime (reference counting), shapes,
** strides, kernel views. Storage memory comes from (and goes back to) the
** device's backend; tensors never read or write their data here. */
#include <stdlib.h>
#include <string.h>
#include "fdm.h"
#include "fdm_autograd.h"
#include "fdm_backend.h"

static size_t live_bytes;   /* tensor storage alive, all devices */

size_t fdm_live_bytes(void) { return __atomic_load_n(&live_bytes, __ATOMIC_RELAXED); }

static fdm_storage *storage_new(size_t nbytes, fdm_device dev) {
  const fdm_backend *be = fdm_backend_get(dev);
  if (!be) return NULL;
  fdm_storage *s = malloc(sizeof *s);
  if (!s) { fdm_seterror("out of memory allocating a storage header"); return NULL; }
  s->data = be->alloc(nbytes);
  if (!s->data) {
    free(s);
    fdm_seterror("out of memory: cannot allocate %.1f MiB on %s", nbytes / 1048576.0,
                 fdm_device_name(dev));
    return NULL;
  }
  s->refs = 1; s->device = dev; s->nbytes = nbytes; s->version = 0;
  s->external = 0; s->free_external = NULL; s->external_ctx = NULL;
  __atomic_add_fetch(&live_bytes, nbytes, __ATOMIC_RELAXED);
  return s;
}

static void storage_release(fdm_storage *s) {
  if (!s || --s->refs > 0) return;
  if (s->external) {
    if (s->free_external) s->free_external(s->external_ctx, s->data, s->nbytes);
  } else {
    const fdm_backend *be = fdm_backend_get(s->device);
    if (be) be->release(s->data, s->nbytes);
    __atomic_sub_fetch(&live_bytes, s->nbytes, __ATOMIC_RELAXED);
  }
  free(s);
}

/* an empty tensor may have sizes whose product overflows (0 x 2^62 x 2^62):
** its strides are never used to address anything, so they may wrap */
static void set_contiguous_strides(fdm_tensor *t) {
  uint64_t st = 1;
  for (int d = t->ndim - 1; d >= 0; d--) { t->stride[d] = (int64_t)st; st *= (uint64_t)t->shape[d]; }
}

int64_t fdm_shape_numel(const char *op, int ndim, const int64_t *shape) {
  int64_t n = 1;
  int zero = 0;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) return fdm_seterror("%s: negative size %lld in a shape", op, (long long)shape[d]);
    if (shape[d] == 0) zero = 1;
  }
  if (zero) return 0;   /* any product with a 0 is 0, however large the other sizes */
  for (int d = 0; d < ndim; d++) {
    if (n > INT64_MAX / shape[d])
      return fdm_seterror("%s: a shape of more than %lld elements is too large", op, (long long)INT64_MAX);
    n *= shape[d];
  }
  return n;
}

/* a tensor header with contiguous strides (no storage yet) */
static fdm_tensor *header_new(fdm_dtype dt, int ndim, const int64_t *shape, fdm_device dev,
                              size_t *nbytes) {
  if (ndim < 0 || ndim > FDM_MAXDIM) {
    fdm_seterror("tensors have at most %d dims, asked for %d", FDM_MAXDIM, ndim);
    return NULL;
  }
  int64_t n = fdm_shape_numel("empty", ndim, shape);
  if (n < 0) return NULL;
  if (n > INT64_MAX / 16) { fdm_seterror("empty: shape too large (%lld elements)", (long long)n); return NULL; }
  fdm_tensor *t = calloc(1, sizeof *t);
  if (!t) { fdm_seterror("out of memory"); return NULL; }
  t->refs = 1; t->dtype = dt; t->device = dev; t->ndim = ndim;
  for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
  set_contiguous_strides(t);
  *nbytes = (size_t)n * fdm_dtype_size(dt);
  return t;
}

fdm_tensor *fdm_empty(fdm_dtype dt, int ndim, const int64_t *shape, fdm_device dev) {
  size_t nbytes;
  fdm_tensor *t = header_new(dt, ndim, shape, dev, &nbytes);
  if (!t) return NULL;
  t->storage = storage_new(nbytes, dev);
  if (!t->storage) { free(t); return NULL; }
  return t;
}

fdm_tensor *fdm_zeros(fdm_dtype dt, int ndim, const int64_t *shape, fdm_device dev) {
  fdm_tensor *t = fdm_empty(dt, ndim, shape, dev);
  if (!t) return NULL;
  const fdm_backend *be = fdm_backend_get(dev);
  if (t->storage->nbytes && be->memset0(t->storage->data, t->storage->nbytes)) { fdm_release(t); return NULL; }
  return t;
}

fdm_tensor *fdm_from_external(fdm_dtype dt, int ndim, const int64_t *shape, fdm_device dev,
                              void *data, size_t nbytes, fdm_external_free free_fn, void *ctx) {
  size_t need;
  if (!fdm_backend_get(dev)) return NULL;
  fdm_tensor *t = header_new(dt, ndim, shape, dev, &need);
  if (!t) return NULL;
  if (nbytes < need) {
    free(t);
    fdm_seterror("external memory of %zu bytes is too small for %zu bytes of tensor", nbytes, need);
    return NULL;
  }
  if ((uintptr_t)data % fdm_dtype_size(dt)) {
    free(t);
    fdm_seterror("external memory at %p is not aligned for %s", data, fdm_dtype_name(dt));
    return NULL;
  }
  fdm_storage *s = calloc(1, sizeof *s);
  if (!s) { free(t); fdm_seterror("out of memory allocating a storage header"); return NULL; }
  s->refs = 1; s->device = dev; s->nbytes = nbytes; s->data = data;
  s->external = 1; s->free_external = free_fn; s->external_ctx = ctx;
  t->storage = s;
  return t;
}

int fdm_transfer_bytes(fdm_tensor *dst, const fdm_tensor *src) {
  size_t n = (size_t)fdm_numel(src) * fdm_dtype_size(src->dtype);
  if (!fdm_is_contiguous(dst) || !fdm_is_contiguous(src) || dst->dtype != src->dtype ||
      (size_t)fdm_numel(dst) * fdm_dtype_size(dst->dtype) != n)
    return fdm_seterror("transfer: internal error, expected two contiguous tensors of one dtype and size");
  return fdm_backend_copy(dst->device, fdm_data(dst), src->device, fdm_data(src), n);
}

int fdm_download_bytes(const fdm_tensor *t, void *host, size_t nbytes) {
  if (!fdm_is_contiguous(t) || nbytes != (size_t)fdm_numel(t) * fdm_dtype_size(t->dtype))
    return fdm_seterror("download: internal error, expected the %zu bytes of a contiguous tensor", nbytes);
  return fdm_backend_copy(FDM_CPU, host, t->device, fdm_data(t), nbytes);
}

void fdm_bump_version(fdm_tensor *t) { if (t && t->storage) t->storage->version++; }

fdm_kview fdm_kview_of(const fdm_tensor *t) {
  fdm_kview v;
  v.data = fdm_data(t); v.dtype = t->dtype; v.ndim = t->ndim;
  for (int d = 0; d < FDM_MAXDIM; d++) {
    v.shape[d] = d < t->ndim ? t->shape[d] : 1;
    v.stride[d] = d < t->ndim ? t->stride[d] : 0;
  }
  return v;
}

fdm_kview fdm_kview_bcast(const fdm_tensor *t, int nd, const int64_t *shape) {
  fdm_kview v = fdm_kview_of(t);
  int lead = nd - t->ndim;
  v.ndim = nd;
  for (int d = 0; d < nd; d++) {
    int td = d - lead;
    v.shape[d] = shape[d];
    v.stride[d] = (td < 0 || t->shape[td] == 1) ? 0 : t->stride[td];
  }
  return v;
}

fdm_tensor *fdm_empty_like(const fdm_tensor *t) { return fdm_empty(t->dtype, t->ndim, t->shape, t->device); }
fdm_tensor *fdm_zeros_like(const fdm_tensor *t) { return fdm_zeros(t->dtype, t->ndim, t->shape, t->device); }

void fdm_retain(fdm_tensor *t) { if (t) t->refs++; }

void fdm_release(fdm_tensor *t) {
  if (!t || --t->refs > 0) return;
  storage_release(t->storage);
  fdm_release(t->grad);
  if (t->grad_fn) fdm_node_release(t->grad_fn);
  free(t);
}

void fdm_free_data(fdm_tensor *t) {
  storage_release(t->storage);
  t->storage = NULL;
  fdm_release(t->grad); t->grad = NULL;
  if (t->grad_fn) { fdm_node_release(t->grad_fn); t->grad_fn = NULL; }
}

/* shapes are checked when tensors are made, so a product can only overflow
** for an empty tensor: a zero anywhere gives 0 before multiplying */
int64_t fdm_numel(const fdm_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) if (t->shape[d] == 0) return 0;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  return n;
}

int fdm_is_contiguous(const fdm_tensor *t) {
  uint64_t st = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] != 1 && (uint64_t)t->stride[d] != st) return 0;
    st *= (uint64_t)t->shape[d];
  }
  return 1;
}

void *fdm_data(const fdm_tensor *t) {
  if (!t->storage) return NULL;
  return (char *)t->storage->data + t->offset * (int64_t)fdm_dtype_size(t->dtype);
}

int fdm_same_shape(const fdm_tensor *a, const fdm_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int d = 0; d < a->ndim; d++) if (a->shape[d] != b->shape[d]) return 0;
  return 1;
}

/* a view: new tensor header over t's storage (used by runtime/ops/op_view.c) */
fdm_tensor *fdm_make_view(fdm_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                          int64_t offset) {
  fdm_tensor *v = calloc(1, sizeof *v);
  if (!v) { fdm_seterror("out of memory"); return NULL; }
  v->refs = 1; v->dtype = t->dtype; v->device = t->device; v->ndim = ndim;
  memcpy(v->shape, shape, ndim * sizeof *shape);
  memcpy(v->stride, stride, ndim * sizeof *stride);
  v->offset = offset;
  v->storage = t->storage;
  t->storage->refs++;
  return v;
}
