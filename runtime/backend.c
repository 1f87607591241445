/* backend.c: the device table. The CPU entry is always present; a CUDA build
** registers its own entry (kernels/cuda), otherwise asking for it fails cleanly. */
#include <stdlib.h>
#include <stdio.h>
#include "fdm_backend.h"

static void *cpu_alloc(size_t n) {
  void *p = NULL;
  /* 64-byte alignment keeps AVX loads aligned and rows cache-line aligned */
  if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
  return p;
}
static void cpu_release(void *p, size_t n) { (void)n; free(p); }

static const fdm_backend cpu_backend = {"cpu", cpu_alloc, cpu_release};
static const fdm_backend *backends[FDM_NDEVICE] = {[FDM_CPU] = &cpu_backend};

const fdm_backend *fdm_backend_get(fdm_device dev) {
  if ((unsigned)dev < FDM_NDEVICE && backends[dev]) return backends[dev];
  fdm_seterror("device '%s' is not available in this build of fdm (built without CUDA)",
               fdm_device_name(dev));
  return NULL;
}

int fdm_backend_check(const char *op, int n, fdm_tensor *const *ts) {
  for (int i = 0; i < n; i++) {
    if (!ts[i]) continue;
    if (!ts[i]->storage)
      return fdm_seterror("%s: tensor #%d was freed (t:free()) and cannot be used", op, i + 1);
    if (i > 0 && ts[0] && ts[i]->device != ts[0]->device)
      return fdm_seterror("%s: tensors are on different devices (%s and %s)", op,
                          fdm_device_name(ts[0]->device), fdm_device_name(ts[i]->device));
    if (!fdm_backend_get(ts[i]->device)) {
      char msg[256];
      snprintf(msg, sizeof msg, "%s: %s", op, fdm_lasterror());
      return fdm_seterror("%s", msg);
    }
  }
  return 0;
}
