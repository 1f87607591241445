/* cpu_backend.c: the CPU entry of the device table: host memory and the
** kernel table of kernels/cpu/.
**
** The allocator keeps freed blocks of the exact same size for reuse:
** training loops allocate the same activation sizes every step, and fresh
** pages from the kernel cost a page fault each (measured: 100 MB add went
** from 77 ms to ~25 ms with reuse). fdm.empty_cache() returns the cache. */
#include <stdlib.h>
#include <string.h>
#include "fdm_device.h"
#include "cpu_kernels.h"

#define CACHE_SLOTS 512
static struct { void *p; size_t n; } cache[CACHE_SLOTS];
static int ncached;
static size_t cached_bytes, cache_limit = (size_t)3 << 30, live_bytes;
static uint64_t nallocs;
static const size_t min_cached = 64 << 10;   /* small blocks: malloc is fast enough */

static size_t cpu_empty_cache(void) {
  size_t freed = cached_bytes;
  for (int i = 0; i < ncached; i++) free(cache[i].p);
  ncached = 0;
  cached_bytes = 0;
  return freed;
}

static void *cpu_alloc(size_t n) {
  void *p = NULL;
  if (n >= min_cached)
    for (int i = ncached - 1; i >= 0; i--)
      if (cache[i].n == n) {
        p = cache[i].p;
        cache[i] = cache[--ncached];
        cached_bytes -= n;
        break;
      }
  /* 64-byte alignment keeps AVX loads aligned and rows cache-line aligned */
  if (!p && posix_memalign(&p, 64, n ? n : 64) != 0) {
    cpu_empty_cache();   /* out of memory: give back the cache and try once more */
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
  }
  live_bytes += n;
  nallocs++;
  return p;
}

static void cpu_release(void *p, size_t n) {
  live_bytes -= n;
  if (n >= min_cached && ncached < CACHE_SLOTS && cached_bytes + n <= cache_limit) {
    cache[ncached].p = p; cache[ncached].n = n; ncached++;
    cached_bytes += n;
    return;
  }
  free(p);
}

static int cpu_memset0(void *p, size_t n) { memset(p, 0, n); return 0; }
static int cpu_memcpy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); return 0; }
static int cpu_synchronize(void) { return 0; }

static void cpu_stats(fdm_backend_stats *st) {
  memset(st, 0, sizeof *st);
  st->live_bytes = live_bytes;
  st->cached_bytes = cached_bytes;
  st->allocs = nallocs;
}

#define CPU_SLOT(name, params) .name = cpu_kernel_##name,
static const fdm_kernels cpu_kernels = {FDM_ALL_KERNELS(CPU_SLOT)};
#undef CPU_SLOT

static const fdm_backend cpu_backend = {
  "cpu", cpu_alloc, cpu_release, cpu_memset0, cpu_memcpy, cpu_memcpy, cpu_synchronize,
  cpu_empty_cache, cpu_stats, &cpu_kernels,
  NULL, NULL, NULL, NULL,   /* no graphs: fdm.graph says so (emulated graphs run anywhere) */
  NULL};                    /* memory: the loaders read MemAvailable themselves */

const fdm_backend *fdm_cpu_backend(void) { return &cpu_backend; }
