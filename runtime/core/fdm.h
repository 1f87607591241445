/*
** fdm.h: the public C API of the fdm runtime.
** Tensors are reference counted; every function that returns an fdm_tensor*
** returns a NEW reference (release it with fdm_release) or NULL on error, in
** which case fdm_lasterror() says what went wrong. Nothing here calls abort()
** or exit() because of bad input.
*/
#ifndef FDM_H
#define FDM_H

#include <stddef.h>
#include <stdint.h>

#define FDM_VERSION "0.1.0"
#define FDM_MAXDIM 8

typedef enum {
  FDM_FLOAT32 = 0, FDM_FLOAT16, FDM_BFLOAT16, FDM_INT64, FDM_UINT8, FDM_BOOL,
  FDM_NDTYPE
} fdm_dtype;

/* FDM_FAKE is the test suite's second device (tests/c/fake_backend.c, a
** plugin loaded by the tests only): CPU kernels over separately tagged memory. */
typedef enum { FDM_CPU = 0, FDM_CUDA = 1, FDM_FAKE = 2, FDM_NDEVICE } fdm_device;

/* Frees memory a storage wraps but did not allocate (a mapped file, a buffer
** owned by someone else); NULL: nothing to free. */
typedef void (*fdm_external_free)(void *ctx, void *data, size_t nbytes);

typedef struct fdm_storage {
  int refs;
  fdm_device device;
  size_t nbytes;
  void *data;
  uint64_t version;              /* bumped by every in-place write (autograd checks it) */
  int external;                  /* data not from the backend allocator: freed by free_external */
  fdm_external_free free_external;
  void *external_ctx;
} fdm_storage;

struct fdm_node;

typedef struct fdm_tensor {
  int refs;
  fdm_dtype dtype;
  fdm_device device;
  int ndim;
  int64_t shape[FDM_MAXDIM];
  int64_t stride[FDM_MAXDIM];  /* in elements */
  int64_t offset;              /* in elements, into storage */
  fdm_storage *storage;
  int requires_grad;           /* leaf that wants .grad, or result of a recorded op */
  struct fdm_tensor *grad;     /* accumulated gradient of a leaf (NULL until backward) */
  struct fdm_node *grad_fn;    /* op that produced it, NULL for leaves */
} fdm_tensor;

/* ---- kernel views ----
** What a kernel sees of a tensor: its device data pointer, dtype, shape and
** strides (in elements). No references, no autograd. A view may be given a
** broadcast shape, where broadcast dims have stride 0. */
typedef struct fdm_kview {
  void *data;
  fdm_dtype dtype;
  int ndim;
  int64_t shape[FDM_MAXDIM];
  int64_t stride[FDM_MAXDIM];
} fdm_kview;
fdm_kview fdm_kview_of(const fdm_tensor *t);
/* t seen through the broadcast shape (nd, shape): leading and size-1 dims get stride 0 */
fdm_kview fdm_kview_bcast(const fdm_tensor *t, int nd, const int64_t *shape);
static inline int64_t fdm_kview_numel(const fdm_kview *v) {
  int64_t n = 1;
  for (int d = 0; d < v->ndim; d++) if (v->shape[d] == 0) return 0;   /* no overflow on empty views */
  for (int d = 0; d < v->ndim; d++) n *= v->shape[d];
  return n;
}
/* elements from the view's first to its last addressed one (non-negative
** strides): a copy of that span keeps the view's strides valid */
static inline int64_t fdm_kview_extent(const fdm_kview *v) {
  if (fdm_kview_numel(v) == 0) return 0;
  int64_t e = 1;
  for (int d = 0; d < v->ndim; d++) e += (v->shape[d] - 1) * v->stride[d];
  return e;
}

/* ---- errors (core/error.c) ---- */
int fdm_seterror(const char *fmt, ...);   /* always returns -1 */
const char *fdm_lasterror(void);
/* how many errors were set so far (a caller sees whether a callee set one) */
unsigned long fdm_error_count(void);
/* formats a shape as "[2, 3, 4]" into buf (returns buf) */
char *fdm_shapestr(const fdm_tensor *t, char *buf, size_t n);

/* ---- dtypes ---- */
size_t fdm_dtype_size(fdm_dtype d);
const char *fdm_dtype_name(fdm_dtype d);
int fdm_dtype_from_name(const char *name, fdm_dtype *out);  /* 0 ok, -1 unknown */
const char *fdm_device_name(fdm_device d);
int fdm_device_from_name(const char *name, fdm_device *out);
float fdm_half_to_float(uint16_t h);
uint16_t fdm_float_to_half(float f);
float fdm_bf16_to_float(uint16_t h);
uint16_t fdm_float_to_bf16(float f);
/* n values at once (the same results; F16C instructions where the build has them) */
void fdm_half_to_float_n(const uint16_t *h, float *dst, size_t n);
void fdm_bf16_to_float_n(const uint16_t *h, float *dst, size_t n);
/* v rounded to dtype d (FDM_BFLOAT16/FDM_FLOAT16, round to nearest even, as
** the conversions above) and back to float; FDM_FLOAT32: v itself */
float fdm_round_to(fdm_dtype d, float v);

/* ---- tensor lifetime (core/tensor.c) ---- */
fdm_tensor *fdm_empty(fdm_dtype dt, int ndim, const int64_t *shape, fdm_device dev);
fdm_tensor *fdm_zeros(fdm_dtype dt, int ndim, const int64_t *shape, fdm_device dev);
/* a contiguous tensor over memory fdm did not allocate (data must hold the
** whole shape, aligned for dt); free_fn(ctx, data, nbytes) runs when the last
** reference goes, NULL when the owner frees it later itself */
fdm_tensor *fdm_from_external(fdm_dtype dt, int ndim, const int64_t *shape, fdm_device dev,
                              void *data, size_t nbytes, fdm_external_free free_fn, void *ctx);
fdm_tensor *fdm_empty_like(const fdm_tensor *t);
fdm_tensor *fdm_zeros_like(const fdm_tensor *t);
void fdm_retain(fdm_tensor *t);
void fdm_release(fdm_tensor *t);               /* NULL-safe */
void fdm_free_data(fdm_tensor *t);             /* t:free(): drop storage now */

int64_t fdm_numel(const fdm_tensor *t);
/* the product of shape[0..ndim), or -1 with the error set when it exceeds int64 */
int64_t fdm_shape_numel(const char *op, int ndim, const int64_t *shape);
/* the bytes of contiguous src into contiguous dst (same dtype and size), across
** devices through their backends */
int fdm_transfer_bytes(fdm_tensor *dst, const fdm_tensor *src);
/* the bytes of a contiguous tensor into host memory (nbytes: its whole size) */
int fdm_download_bytes(const fdm_tensor *t, void *host, size_t nbytes);
/* in-place writes call this so autograd can refuse stale saved tensors */
void fdm_bump_version(fdm_tensor *t);
int fdm_is_contiguous(const fdm_tensor *t);
/* first element (storage data + offset), in the tensor's device memory: only
** kernels and host-side readers of CPU tensors may dereference it */
void *fdm_data(const fdm_tensor *t);
int fdm_same_shape(const fdm_tensor *a, const fdm_tensor *b);
/* a view: a new header over t's storage with the given shape, strides and offset */
fdm_tensor *fdm_make_view(fdm_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                          int64_t offset);
/* bytes of tensor storage currently alive: for GC pressure and leak tests */
size_t fdm_live_bytes(void);

/* ---- the random stream (core/rng.c): Philox4x32-10, counter-based ---- */
void fdm_manual_seed(uint64_t seed);
void fdm_rng_get(uint64_t *seed, uint64_t *offset);
void fdm_rng_set(uint64_t seed, uint64_t offset);
/* reserves blocks 128-bit blocks of the stream; returns the offset of the first */
uint64_t fdm_rng_take(uint64_t blocks);
/* device-offset mode (graphs): draws read {seed, offset} from state (int64
** [2] on a device) and reserve blocks relative to that offset; end returns
** the blocks reserved since begin */
void fdm_rng_device_begin(fdm_tensor *state);
uint64_t fdm_rng_device_end(void);
fdm_tensor *fdm_rng_device_state(void);   /* NULL outside the mode */
uint64_t fdm_rng_device_take(uint64_t blocks);

/* ---- autocast (core/autocast.c), as torch.autocast: while it is on,
** conv2d, conv_transpose2d, linear and matmul/bmm round their operands to
** its dtype (bfloat16 or float16) and accumulate in float32; FDM_FLOAT32 is
** off. Per thread, like grad mode. */
fdm_dtype fdm_autocast_dtype(void);
/* d: FDM_FLOAT32 (off), FDM_BFLOAT16 or FDM_FLOAT16; -1 with the error set
** for any other dtype. *prev (may be NULL) gets the state before. */
int fdm_set_autocast(fdm_dtype d, fdm_dtype *prev);

/* ---- checks used by every op: return -1 and set the error on failure ---- */
int fdm_check_dtype(const char *op, const fdm_tensor *t, fdm_dtype want);
int fdm_check_float(const char *op, const fdm_tensor *t);
int fdm_check_ndim(const char *op, const char *what, const fdm_tensor *t, int ndim);
int fdm_check_same_device(const char *op, const fdm_tensor *a, const fdm_tensor *b);

#endif
