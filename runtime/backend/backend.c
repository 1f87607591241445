/* backend.c: the device registry. The CPU registers itself on first use
** (kernels/cpu/cpu_backend.c); other devices register from plugins loaded
** with fdm_backend_load. Asking for a device nobody registered fails cleanly. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "fdm_backend.h"

const fdm_backend *fdm_cpu_backend(void);   /* kernels/cpu/cpu_backend.c */

static const fdm_backend *backends[FDM_NDEVICE];

static void ensure_cpu(void) { if (!backends[FDM_CPU]) backends[FDM_CPU] = fdm_cpu_backend(); }

int fdm_backend_register(fdm_device dev, const fdm_backend *be) {
  ensure_cpu();
  if ((unsigned)dev >= FDM_NDEVICE) return fdm_seterror("register backend: no device slot %d", (int)dev);
  if (dev == FDM_CPU) return fdm_seterror("register backend: the cpu backend is built in");
  if (!be || !be->alloc || !be->release || !be->memset0 || !be->upload || !be->download ||
      !be->synchronize || !be->kernels)
    return fdm_seterror("register backend '%s': memory functions and a kernel table are required",
                        be && be->name ? be->name : "?");
  backends[dev] = be;
  return 0;
}

int fdm_backend_available(fdm_device dev) {
  ensure_cpu();
  return (unsigned)dev < FDM_NDEVICE && backends[dev] != NULL;
}

const fdm_backend *fdm_backend_get(fdm_device dev) {
  if (fdm_backend_available(dev)) return backends[dev];
  fdm_seterror("device '%s' is not available (no %s backend is loaded: %s)", fdm_device_name(dev),
               fdm_device_name(dev),
               dev == FDM_CUDA ? "this build of fdm has no CUDA backend or no GPU was found"
                               : "it is a test device");
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

static const fdm_kernels no_kernels;

const fdm_kernels *fdm_kernels_of(fdm_device dev) {
  return fdm_backend_available(dev) ? backends[dev]->kernels : &no_kernels;
}

int fdm_kernel_missing(const char *op, const char *kernel, fdm_device dev) {
  return fdm_seterror("%s: not implemented on device '%s' (its backend has no '%s' kernel)", op,
                      fdm_device_name(dev), kernel);
}

#define KERNEL_NAME(name, params) #name,
static const char *const kernel_names[] = {FDM_ALL_KERNELS(KERNEL_NAME) NULL};
#undef KERNEL_NAME

const char *const *fdm_kernel_names(void) { return kernel_names; }

int fdm_backend_supports(fdm_device dev, const char *kernel) {
  if (!fdm_backend_available(dev)) return 0;
  /* the table is a struct of function pointers in kernel_names order */
  typedef int (*slot)(void);
  const slot *slots = (const slot *)(const void *)backends[dev]->kernels;
  for (int i = 0; kernel_names[i]; i++)
    if (strcmp(kernel_names[i], kernel) == 0) return slots[i] != NULL;
  return 0;
}

int fdm_backend_copy(fdm_device dst_dev, void *dst, fdm_device src_dev, const void *src, size_t nbytes) {
  const fdm_backend *d = fdm_backend_get(dst_dev), *s = d ? fdm_backend_get(src_dev) : NULL;
  if (!s || nbytes == 0) return s ? 0 : -1;
  if (src_dev == FDM_CPU) return d->upload(dst, src, nbytes);
  if (dst_dev == FDM_CPU) return s->download(dst, src, nbytes);
  /* between two other devices: through host memory */
  const fdm_backend *cpu = backends[FDM_CPU];
  void *tmp = cpu->alloc(nbytes);
  if (!tmp) return fdm_seterror("out of memory: cannot stage %.1f MiB between devices", nbytes / 1048576.0);
  int rc = s->download(tmp, src, nbytes);
  if (rc == 0) rc = d->upload(dst, tmp, nbytes);
  cpu->release(tmp, nbytes);
  return rc;
}

size_t fdm_empty_cache(void) {
  ensure_cpu();
  size_t freed = 0;
  for (int d = 0; d < FDM_NDEVICE; d++)
    if (backends[d] && backends[d]->empty_cache) freed += backends[d]->empty_cache();
  return freed;
}

size_t fdm_cached_bytes(void) {
  ensure_cpu();
  size_t n = 0;
  for (int d = 0; d < FDM_NDEVICE; d++)
    if (backends[d] && backends[d]->stats) {
      fdm_backend_stats st;
      backends[d]->stats(&st);
      n += st.cached_bytes;
    }
  return n;
}

static const fdm_plugin_host host = {FDM_PLUGIN_ABI, fdm_backend_register, fdm_backend_get, fdm_seterror};

int fdm_backend_load(const char *path) {
  ensure_cpu();
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) return fdm_seterror("cannot load backend plugin '%s': %s", path, dlerror());
  fdm_plugin_register_fn reg;
  *(void **)&reg = dlsym(h, "fdm_backend_plugin_register");
  if (!reg) {
    dlclose(h);
    return fdm_seterror("'%s' is not an fdm backend plugin (no fdm_backend_plugin_register)", path);
  }
  /* the plugin stays loaded: its backend table and kernels are used until exit */
  return reg(&host);
}
