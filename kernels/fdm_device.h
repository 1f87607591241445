/*
** fdm_device.h: what a device gives fdm: memory functions and its kernel
** table (fdm_kernels.h), bundled as an fdm_backend. The CPU's is
** kernels/cpu/cpu_backend.c; other devices come as plugins exporting
** fdm_backend_plugin_register(), which receives the host's functions. The
** registry that holds them is runtime/backend (fdm_backend.h).
*/
#ifndef FDM_DEVICE_H
#define FDM_DEVICE_H
#include "fdm_kernels.h"

typedef struct fdm_backend_stats {
  size_t live_bytes;        /* allocated and not yet released */
  size_t cached_bytes;      /* held by the allocator's cache for reuse */
  uint64_t allocs;          /* allocation calls that succeeded */
  uint64_t uploads, downloads;   /* host -> device and device -> host copies */
} fdm_backend_stats;

typedef struct fdm_backend {
  const char *name;
  void *(*alloc)(size_t nbytes);                 /* NULL on out of memory */
  void (*release)(void *p, size_t nbytes);
  int (*memset0)(void *p, size_t nbytes);        /* zero fill */
  int (*upload)(void *dst, const void *host_src, size_t nbytes);
  int (*download)(void *host_dst, const void *src, size_t nbytes);
  int (*synchronize)(void);
  size_t (*empty_cache)(void);                   /* returns the bytes given back */
  void (*stats)(fdm_backend_stats *out);
  const fdm_kernels *kernels;
  /* Graphs (CUDA graphs), optional: NULL on a device without them. While a
  ** capture runs, the device's work is recorded, not run, and every
  ** allocation and release goes to the graph's own memory pool, which no
  ** other work gets until graph_free. graph_begin returns the graph or NULL
  ** with the error set; graph_end ends the capture and prepares replays (on
  ** failure the graph stays valid for graph_free); graph_replay runs the
  ** recorded work once more; graph_free (also of a capture that failed)
  ** gives its memory back once tensors made during the capture are gone. */
  void *(*graph_begin)(void);
  int (*graph_end)(void *graph);
  int (*graph_replay)(void *graph);
  void (*graph_free)(void *graph);
  /* Optional (NULL: unknown): the bytes a new allocation could still get
  ** (the device's free memory plus what the allocator caches) and the
  ** device's total; 0 or -1 with the error set. Lets a loader refuse a model
  ** that cannot fit before copying any of it. */
  int (*mem_info)(size_t *available, size_t *total);
} fdm_backend;

typedef struct fdm_plugin_host {
  int abi;                                       /* FDM_PLUGIN_ABI */
  int (*register_backend)(fdm_device dev, const fdm_backend *be);
  const fdm_backend *(*get)(fdm_device dev);
  int (*seterror)(const char *fmt, ...);
  /* Frees what the host can before a device allocation gives up: runs the
  ** Lua garbage collector (tensors nobody references any more) so that a
  ** training loop never needs a manual collectgarbage(). An allocator calls
  ** it once on failure, empties its own cache, and retries. */
  void (*reclaim)(void);
} fdm_plugin_host;
/* 3: the kernel table's counter_add, random_at, adam_multi_at slots and the
** backend's graph functions; 4: the group_norm_act_forward slot and the
** backend's mem_info */
#define FDM_PLUGIN_ABI 4
typedef int (*fdm_plugin_register_fn)(const fdm_plugin_host *host);
#endif
