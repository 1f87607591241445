/*
** fake_backend.c: the test suite's second device, "fake" (a backend plugin
** built by `make test`, never installed). Its kernel table is the CPU's, so
** results must match the CPU bit for bit, but its memory is its own: every
** block carries a tag checked when it is released, and copies in and out are
** counted, so a test sees an op that forgot to move data, or freed a block
** through the wrong device. FDM_FAKE_WITHOUT=k1,k2 leaves those kernels out
** (to test the "not implemented on device" error); FDM_FAKE_MEMORY=BYTES
** makes it a device of that size (allocations beyond fail, mem_info says so).
*/
#include <stdlib.h>
#include <string.h>
#include "fdm_device.h"

#define TAG 0xfa6edeadbeef0001ull
#define HEADER 64   /* keeps the 64-byte alignment of the CPU allocator */

static fdm_kernels kernels;
static const fdm_plugin_host *host;
static size_t live_bytes;
static uint64_t allocs, uploads, downloads, bad_releases;

/* FDM_FAKE_MEMORY=BYTES: the device holds that much (the tests' small GPU) */
static size_t fake_capacity(void) {
  const char *env = getenv("FDM_FAKE_MEMORY");
  return env ? (size_t)strtoull(env, NULL, 10) : 0;
}

static void *fake_alloc(size_t n) {
  void *p = NULL;
  size_t cap = fake_capacity();
  if (cap && live_bytes + n > cap) return NULL;
  if (posix_memalign(&p, 64, HEADER + (n ? n : 1)) != 0) return NULL;
  uint64_t *h = p;
  h[0] = TAG; h[1] = n;
  live_bytes += n;
  allocs++;
  return (char *)p + HEADER;
}

static void fake_release(void *p, size_t n) {
  uint64_t *h = (uint64_t *)((char *)p - HEADER);
  if (h[0] != TAG || h[1] != n) { bad_releases++; return; }   /* not ours: leak rather than corrupt */
  h[0] = 0;
  live_bytes -= n;
  free(h);
}

static int fake_memset0(void *p, size_t n) { memset(p, 0, n); return 0; }
static int fake_upload(void *dst, const void *src, size_t n) { memcpy(dst, src, n); uploads++; return 0; }
static int fake_download(void *dst, const void *src, size_t n) { memcpy(dst, src, n); downloads++; return 0; }
static int fake_synchronize(void) { return 0; }

static void fake_stats(fdm_backend_stats *st) {
  memset(st, 0, sizeof *st);
  st->live_bytes = live_bytes;
  st->allocs = allocs;
  st->uploads = uploads;
  st->downloads = downloads;
  /* a release with a wrong tag shows as cached bytes, which this device never has */
  st->cached_bytes = (size_t)bad_releases;
}

/* a device of FDM_FAKE_MEMORY bytes (the tests' stand-in for a small GPU); unknown without it */
static int fake_mem_info(size_t *available, size_t *total) {
  size_t cap = fake_capacity();
  if (!cap) return host->seterror("fake: its memory size is unknown (set FDM_FAKE_MEMORY)");
  *total = cap;
  *available = cap > live_bytes ? cap - live_bytes : 0;
  return 0;
}

static const fdm_backend fake = {
  "fake", fake_alloc, fake_release, fake_memset0, fake_upload, fake_download, fake_synchronize,
  NULL, fake_stats, &kernels,
  NULL, NULL, NULL, NULL,   /* no graphs: the tests run them emulated (fdm.graph{emulate = true}) */
  fake_mem_info};

/* clears the slots named in FDM_FAKE_WITHOUT (comma-separated) */
static void drop_kernels(void) {
  const char *env = getenv("FDM_FAKE_WITHOUT");
  if (!env) return;
#define DROP(name, params) \
  { const char *hit = strstr(env, #name); size_t len = strlen(#name); \
    if (hit && (hit == env || hit[-1] == ',') && (hit[len] == ',' || hit[len] == 0)) kernels.name = NULL; }
  FDM_ALL_KERNELS(DROP)
#undef DROP
}

int fdm_backend_plugin_register(const fdm_plugin_host *h) {
  if (h->abi != FDM_PLUGIN_ABI)
    return h->seterror("the fake backend was built for plugin ABI %d, this fdm has %d", FDM_PLUGIN_ABI, h->abi);
  host = h;
  const fdm_backend *cpu = h->get(FDM_CPU);
  if (!cpu) return -1;
  kernels = *cpu->kernels;
  drop_kernels();
  return h->register_backend(FDM_FAKE, &fake);
}
