/*
** fdm_backend.h: the device registry. Each device registers an fdm_backend
** (kernels/fdm_device.h): its memory functions and its kernel table. Ops allocate
** through the table, move data through it, and call kernels through it;
** nothing above the kernels touches device memory. A device is either built
** in (the CPU, kernels/cpu/cpu_backend.c) or a plugin: a shared object whose
** fdm_backend_plugin_register() the registry calls with the host functions.
*/
#ifndef FDM_BACKEND_H
#define FDM_BACKEND_H
#include "fdm.h"
#include "fdm_device.h"
#include "fdm_profile.h"

/* NULL (with the error set) when the device is not available */
const fdm_backend *fdm_backend_get(fdm_device dev);
int fdm_backend_available(fdm_device dev);
/* every operand of an op must be on one available device; returns -1 + error */
int fdm_backend_check(const char *op, int n, fdm_tensor *const *ts);
/* the kernel table of an available device (after fdm_backend_check) */
const fdm_kernels *fdm_kernels_of(fdm_device dev);
/* the error for a kernel the device lacks: "<op>: not implemented on device ..." */
int fdm_kernel_missing(const char *op, const char *kernel, fdm_device dev);
/* calls kernel KNAME of DEV's table, or fails with the clear error when the
** device has no such kernel. Evaluates to the kernel's 0 / -1. While
** fdm.profile is on, the call is timed (fdm_profile.h). */
#define FDM_KERNEL(dev, op, kname, ...)                                                           \
  (!fdm_kernels_of(dev)->kname ? fdm_kernel_missing((op), #kname, (dev))                           \
   : !fdm_profile_on           ? fdm_kernels_of(dev)->kname(__VA_ARGS__)                           \
                               : (fdm_profile_begin(dev),                                          \
                                  fdm_profile_end((dev), (op), #kname, fdm_kernels_of(dev)->kname(__VA_ARGS__))))
/* whether DEV has a kernel of that name (ggml's supports_op) */
int fdm_backend_supports(fdm_device dev, const char *kernel);
/* the names of every kernel slot, NULL-terminated */
const char *const *fdm_kernel_names(void);

/* registering devices */
int fdm_backend_register(fdm_device dev, const fdm_backend *be);
/* what the host does when device memory runs out (the Lua layer registers a
** full garbage collection); NULL: nothing */
void fdm_backend_set_reclaim(void (*fn)(void *ud), void *ud);
void fdm_backend_reclaim(void);
/* the file a known device's plugin is looked for at: $FDM_<DEVICE>_BACKEND,
** else fdm_backend_<device>.so next to the fdm module (build/lua/fdm/ or
** lib/lua/5.4/fdm/); NULL when there is none to try */
const char *fdm_backend_plugin_path(fdm_device dev, char *buf, size_t n);
/* loads a backend plugin (a shared object exporting fdm_backend_plugin_register) */
int fdm_backend_load(const char *path);

/* while a graph is being captured on dev (FDM_NDEVICE: none), copies between
** it and other devices fail: a capture records work, it does not run it */
void fdm_backend_set_capturing(fdm_device dev);
/* whether a graph is being captured on dev */
int fdm_backend_capturing(fdm_device dev);

/* copies between devices: whole storages' bytes, dst and src of equal size */
int fdm_backend_copy(fdm_device dst_dev, void *dst, fdm_device src_dev, const void *src, size_t nbytes);

/* the allocators' caches of freed blocks (fdm.empty_cache): every device's,
** or one device's (a device not registered has none); the bytes released */
size_t fdm_empty_cache(void);
size_t fdm_empty_cache_device(fdm_device dev);
size_t fdm_cached_bytes(void);
#endif
