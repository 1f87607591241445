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

typedef enum { FDM_CPU = 0, FDM_CUDA = 1, FDM_NDEVICE } fdm_device;

typedef struct fdm_storage {
  int refs;
  fdm_device device;
  size_t nbytes;
  void *data;
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

/* ---- errors (fdm_error.c) ---- */
int fdm_seterror(const char *fmt, ...);   /* always returns -1 */
const char *fdm_lasterror(void);
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

/* ---- tensor lifetime (fdm_tensor.c) ---- */
fdm_tensor *fdm_empty(fdm_dtype dt, int ndim, const int64_t *shape, fdm_device dev);
fdm_tensor *fdm_zeros(fdm_dtype dt, int ndim, const int64_t *shape, fdm_device dev);
fdm_tensor *fdm_full(fdm_dtype dt, int ndim, const int64_t *shape, double v, fdm_device dev);
fdm_tensor *fdm_empty_like(const fdm_tensor *t);
fdm_tensor *fdm_zeros_like(const fdm_tensor *t);
void fdm_retain(fdm_tensor *t);
void fdm_release(fdm_tensor *t);               /* NULL-safe */
void fdm_free_data(fdm_tensor *t);             /* t:free(): drop storage now */

int64_t fdm_numel(const fdm_tensor *t);
int fdm_is_contiguous(const fdm_tensor *t);
void *fdm_data(const fdm_tensor *t);           /* first element (storage data + offset) */
#define FDM_F32(t) ((float *)fdm_data(t))
fdm_tensor *fdm_contiguous(fdm_tensor *t);     /* new ref; same object if already contiguous */
fdm_tensor *fdm_clone(fdm_tensor *t);
int fdm_same_shape(const fdm_tensor *a, const fdm_tensor *b);
/* bytes of tensor storage currently alive: for GC pressure and leak tests */
size_t fdm_live_bytes(void);

/* ---- checks used by every op: return -1 and set the error on failure ---- */
int fdm_check_dtype(const char *op, const fdm_tensor *t, fdm_dtype want);
int fdm_check_float(const char *op, const fdm_tensor *t);
int fdm_check_ndim(const char *op, const char *what, const fdm_tensor *t, int ndim);
int fdm_check_same_device(const char *op, const fdm_tensor *a, const fdm_tensor *b);

#endif
