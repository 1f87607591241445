/*
** fdm_backend.h: the per-device table. Storage allocation goes through the
** device's entry; ops ask fdm_backend_check() before running a kernel so an
** unavailable device gives a clear error instead of a crash.
*/
#ifndef FDM_BACKEND_H
#define FDM_BACKEND_H
#include "fdm.h"

typedef struct fdm_backend {
  const char *name;
  void *(*alloc)(size_t nbytes);          /* NULL on out of memory */
  void (*release)(void *p, size_t nbytes);
} fdm_backend;

/* NULL (with the error set) when the device is not available in this build */
const fdm_backend *fdm_backend_get(fdm_device dev);
/* every operand of an op must be on one available device; returns -1 + error */
int fdm_backend_check(const char *op, int n, fdm_tensor *const *ts);
/* the CPU allocator's cache of freed blocks */
size_t fdm_empty_cache(void);    /* frees it, returns the bytes released */
size_t fdm_cached_bytes(void);
#endif
