/* error.c: the runtime's error message and the argument checks every op shares. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "fdm.h"

static _Thread_local char errbuf[1024];
static _Thread_local unsigned long errseq;

int fdm_seterror(const char *fmt, ...) {
  va_list ap;
  errseq++;
  va_start(ap, fmt);
  vsnprintf(errbuf, sizeof errbuf, fmt, ap);
  va_end(ap);
  return -1;
}

const char *fdm_lasterror(void) { return errbuf[0] ? errbuf : "unknown error"; }
unsigned long fdm_error_count(void) { return errseq; }

char *fdm_shapestr(const fdm_tensor *t, char *buf, size_t n) {
  size_t k = 0;
  k += snprintf(buf + k, n - k, "[");
  for (int d = 0; d < t->ndim && k < n; d++)
    k += snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)t->shape[d]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

int fdm_check_dtype(const char *op, const fdm_tensor *t, fdm_dtype want) {
  if (t->dtype == want) return 0;
  return fdm_seterror("%s: expected a %s tensor, got %s", op, fdm_dtype_name(want),
                      fdm_dtype_name(t->dtype));
}

int fdm_check_float(const char *op, const fdm_tensor *t) {
  if (t->dtype == FDM_FLOAT32) return 0;
  if (t->dtype == FDM_FLOAT16 || t->dtype == FDM_BFLOAT16)
    return fdm_seterror("%s: %s tensors are for storage only; convert with :float() first",
                        op, fdm_dtype_name(t->dtype));
  return fdm_seterror("%s: expected a float32 tensor, got %s", op, fdm_dtype_name(t->dtype));
}

int fdm_check_ndim(const char *op, const char *what, const fdm_tensor *t, int ndim) {
  char b[128];
  if (t->ndim == ndim) return 0;
  return fdm_seterror("%s: expected %s to have %d dims, got shape %s", op, what, ndim,
                      fdm_shapestr(t, b, sizeof b));
}

int fdm_check_same_device(const char *op, const fdm_tensor *a, const fdm_tensor *b) {
  if (a->device == b->device) return 0;
  return fdm_seterror("%s: tensors are on different devices (%s and %s)", op,
                      fdm_device_name(a->device), fdm_device_name(b->device));
}
