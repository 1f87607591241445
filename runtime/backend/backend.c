/* backend.c: the device registry. The CPU registers itself on first use
** (kernels/cpu/cpu_backend.c); other devices register from plugins loaded
** with fdm_backend_load. Asking for a device nobody registered fails cleanly. */
#define _GNU_SOURCE   /* dladdr */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fdm_backend.h"

const fdm_backend *fdm_cpu_backend(void);   /* kernels/cpu/cpu_backend.c */

static const fdm_backend *backends[FDM_NDEVICE];
static int tried_plugin[FDM_NDEVICE];
static char plugin_error[FDM_NDEVICE][512];

static void ensure_cpu(void) { if (!backends[FDM_CPU]) backends[FDM_CPU] = fdm_cpu_backend(); }

/* a device with a plugin of its own (CUDA) is loaded the first time it is asked for */
static void autoload(fdm_device dev) {
  if (dev != FDM_CUDA || backends[dev] || tried_plugin[dev]) return;
  tried_plugin[dev] = 1;
  char path[4096];
  if (!fdm_backend_plugin_path(dev, path, sizeof path)) {
    snprintf(plugin_error[dev], sizeof plugin_error[dev], "this build of fdm has no %s backend",
             fdm_device_name(dev));
    return;
  }
  if (fdm_backend_load(path) != 0)
    snprintf(plugin_error[dev], sizeof plugin_error[dev], "%s", fdm_lasterror());
}

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
  if ((unsigned)dev >= FDM_NDEVICE) return 0;
  autoload(dev);
  return backends[dev] != NULL;
}

const fdm_backend *fdm_backend_get(fdm_device dev) {
  if (fdm_backend_available(dev)) return backends[dev];
  if ((unsigned)dev < FDM_NDEVICE && plugin_error[dev][0])
    fdm_seterror("device '%s' is not available: %s", fdm_device_name(dev), plugin_error[dev]);
  else
    fdm_seterror("device '%s' is not available (%s)", fdm_device_name(dev),
                 dev == FDM_FAKE ? "a test device, loaded by the test suite only" : "no backend is loaded");
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
  const fdm_kernels *k = backends[dev]->kernels;
#define KERNEL_PRESENT(name, params) if (strcmp(kernel, #name) == 0) return k->name != NULL;
  FDM_ALL_KERNELS(KERNEL_PRESENT)
#undef KERNEL_PRESENT
  return 0;
}

/* the device a graph is being captured on (runtime/ops/op_graph.c), or FDM_NDEVICE */
static fdm_device capturing = FDM_NDEVICE;

void fdm_backend_set_capturing(fdm_device dev) { capturing = dev; }
int fdm_backend_capturing(fdm_device dev) { return capturing != FDM_NDEVICE && capturing == dev; }

int fdm_backend_copy(fdm_device dst_dev, void *dst, fdm_device src_dev, const void *src, size_t nbytes) {
  const fdm_backend *d = fdm_backend_get(dst_dev), *s = d ? fdm_backend_get(src_dev) : NULL;
  if (!s || nbytes == 0) return s ? 0 : -1;
  if (capturing != FDM_NDEVICE && dst_dev != src_dev && (dst_dev == capturing || src_dev == capturing))
    return fdm_seterror("cannot copy between devices '%s' and '%s' while a graph is being captured on '%s' "
                        "(a value read with :item(), :tolist() or printing, a tensor moved with :to(), "
                        "labels checked on the host): do it outside the captured function",
                        fdm_device_name(src_dev), fdm_device_name(dst_dev), fdm_device_name(capturing));
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

size_t fdm_empty_cache_device(fdm_device dev) {
  ensure_cpu();
  if (dev < 0 || dev >= FDM_NDEVICE || !backends[dev] || !backends[dev]->empty_cache) return 0;
  return backends[dev]->empty_cache();
}

size_t fdm_empty_cache(void) {
  size_t freed = 0;
  for (int d = 0; d < FDM_NDEVICE; d++) freed += fdm_empty_cache_device((fdm_device)d);
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

static void (*reclaim_fn)(void *);
static void *reclaim_ud;

void fdm_backend_set_reclaim(void (*fn)(void *ud), void *ud) { reclaim_fn = fn; reclaim_ud = ud; }
void fdm_backend_reclaim(void) { if (reclaim_fn) reclaim_fn(reclaim_ud); }

const char *fdm_backend_plugin_path(fdm_device dev, char *buf, size_t n) {
  char env[64];
  snprintf(env, sizeof env, "FDM_%s_BACKEND", dev == FDM_CUDA ? "CUDA" : "FAKE");
  const char *e = getenv(env);
  if (e && *e) { snprintf(buf, n, "%s", e); return buf; }
  /* next to the code that holds this function: build/lua/fdm/core.so, or the
  ** fdm executable (build/fdm, bin/fdm), whose module tree is lua/fdm/ beside
  ** it in the build and lib/lua/5.4/fdm/ when installed */
  Dl_info info;
  if (!dladdr((void *)fdm_backend_plugin_path, &info) || !info.dli_fname) return NULL;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", info.dli_fname);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
  const char *name = fdm_device_name(dev);
  const char *rel[] = {"", "/lua/fdm", "/../lib/lua/5.4/fdm"};
  for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
    snprintf(buf, n, "%s%s/fdm_backend_%s.so", dir, rel[i], name);
    if (access(buf, R_OK) == 0) return buf;
  }
  return NULL;
}

static const fdm_plugin_host host = {FDM_PLUGIN_ABI, fdm_backend_register, fdm_backend_get, fdm_seterror,
                                     fdm_backend_reclaim};

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
  unsigned long errors = fdm_error_count();
  if (reg(&host) == 0) return 0;
  if (fdm_error_count() == errors)   /* refused without a word: a plugin of another ABI (its kernel table differs) */
    return fdm_seterror("backend plugin '%s' refused to register: built for another fdm (this one has plugin ABI %d); "
                        "rebuild it with this fdm", path, FDM_PLUGIN_ABI);
  return -1;
}
