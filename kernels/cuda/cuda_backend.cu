/*
** cuda_backend.cu: the "cuda" device, a backend plugin (fdm_backend_cuda.so)
** that runtime/backend loads the first time the device is asked for or
** listed. Registration checks that a GPU is there and that cuBLAS and cuDNN
** start; otherwise it registers nothing and says why, so fdm.devices() lists
** the CPU only and `--device cuda` fails with that reason.
**
** Memory: a caching allocator over cudaMalloc (never managed memory). Freed
** blocks are kept per rounded size and reused; all work runs on one stream,
** so a block released while kernels that used it are still queued is only
** handed to later work on the same stream. When cudaMalloc fails, the cache
** is emptied and the host reclaims (Lua's garbage collector frees the
** tensors nobody references) before one more try; if that fails too the
** allocation reports how much was asked and how much is free.
**
** Graphs (cuda_graph.cu): while one is captured, allocations and releases
** go to its pool (struct fdm_cuda_pool), whose blocks nothing else gets until
** the graph is freed.
**
** The kernel table is filled from cuda_kernels.h's weak declarations: slots
** whose kernel no kernels/cuda file defines stay NULL.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unordered_map>
#include <vector>
#include "cuda_kernels.h"

static const fdm_plugin_host *host;
static cudaStream_t stream;
static cublasHandle_t cublas;
static cudnnHandle_t cudnn;
#define CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20)   /* NVIDIA's advice for Hopper */
static void *cublas_workspace;
static int tf32_mode;   /* the math mode the cuBLAS handle has now */
static int sm_count;
static int device_id;
static char last_error[1024];

cudaStream_t fdm_cuda_stream(void) { return stream; }
void fdm_cuda_cublas_math(void) {
  int on = fdm_cuda_tf32();
  if (on == tf32_mode || !cublas) return;
  cublasSetMathMode(cublas, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
  tf32_mode = on;
}
cublasHandle_t fdm_cuda_cublas(void) { return cublas; }
cudnnHandle_t fdm_cuda_cudnn(void) { return cudnn; }
/* read at every call, so fdm.set_tf32() (which sets FDM_TF32) applies at once */
int fdm_cuda_tf32(void) {
  const char *t = getenv("FDM_TF32");
  return t && (strcmp(t, "1") == 0 || strcmp(t, "true") == 0);
}
int fdm_cuda_sm_count(void) { return sm_count; }

int fdm_cuda_seterror(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(last_error, sizeof last_error, "%s", msg);
  if (host) host->seterror("%s", msg);
  return -1;
}

int fdm_cuda_check(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return 0;
  cudaGetLastError();   /* clear a non-sticky error */
  return fdm_cuda_seterror("%s: CUDA error %d (%s)", what, (int)e, cudaGetErrorString(e));
}

int fdm_cuda_launched(const char *what) { return fdm_cuda_check(cudaGetLastError(), what); }

int fdm_cuda_cublas_check(cublasStatus_t s, const char *what) {
  if (s == CUBLAS_STATUS_SUCCESS) return 0;
  return fdm_cuda_seterror("%s: cuBLAS error %d (%s)", what, (int)s, cublasGetStatusString(s));
}

int fdm_cuda_cudnn_check(cudnnStatus_t s, const char *what) {
  if (s == CUDNN_STATUS_SUCCESS) return 0;
  return fdm_cuda_seterror("%s: cuDNN error %d (%s)", what, (int)s, cudnnGetErrorString(s));
}

/* ---- the caching allocator ---- */

/* sizes are rounded so that nearby requests share blocks: 512-byte steps up
** to 1 MiB, then steps of 1/8 of the size's power of two (at most 12.5% slack) */
static size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n <= ((size_t)1 << 20)) return (n + 511) & ~(size_t)511;
  size_t p = (size_t)1 << (63 - __builtin_clzll((unsigned long long)n));   /* p <= n < 2p */
  size_t step = p / 8;
  return (n + step - 1) / step * step;
}

static std::unordered_map<size_t, std::vector<void *>> *free_blocks;
static void *grow_buf;      /* fdm_cuda_scratch's buffer */
static size_t grow_size;
static void *cap_grow_buf;  /* its stand-in during a graph capture */
static size_t cap_grow_size;

/* the memory of one graph (cuda_graph.cu): the blocks it allocated or that
** were released during its capture, by owner in pool_of */
struct fdm_cuda_pool {
  std::unordered_map<size_t, std::vector<void *>> free;   /* owned, not in use by a tensor */
  size_t live = 0;      /* owned blocks held by tensors */
  int dropped = 0;      /* the graph is freed: blocks go to the shared cache when released */
};
static std::unordered_map<void *, fdm_cuda_pool *> *pool_of;
static fdm_cuda_pool *capturing;   /* the pool of the graph being captured, or NULL */
static size_t live_bytes, cached_bytes, peak_bytes;
static uint64_t nallocs, nuploads, ndownloads;

static size_t cuda_empty_cache(void) {
  if (!free_blocks || cached_bytes == 0 || capturing) return 0;   /* a capture forbids the synchronisation */
  cudaStreamSynchronize(stream);
  size_t freed = 0;
  for (auto &kv : *free_blocks) {
    for (void *p : kv.second) { cudaFree(p); freed += kv.first; }
    kv.second.clear();
  }
  free_blocks->clear();
  cached_bytes = 0;
  return freed;
}

static void cuda_release(void *p, size_t nbytes);

/* fdm.empty_cache(): also gives back the scratch buffer (no kernel is
** running on the host side then; the allocator's own pressure path keeps
** it, since a kernel may hold it while it allocates) */
static size_t cuda_empty_all(void) {
  if (capturing) return 0;
  if (grow_buf) {
    cuda_release(grow_buf, grow_size);
    grow_buf = NULL;
    grow_size = 0;
  }
  return cuda_empty_cache();
}

/* during a graph capture cudaMalloc must not count as unsafe work of the
** capturing thread: the relaxed mode lets it through (it records nothing) */
static void *raw_malloc(size_t n) {
  void *p = NULL;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  if (capturing) cudaThreadExchangeStreamCaptureMode(&mode);
  cudaError_t e = cudaMalloc(&p, n);
  if (capturing) cudaThreadExchangeStreamCaptureMode(&mode);
  if (e == cudaSuccess) return p;
  cudaGetLastError();   /* out of memory is not sticky: clear it */
  return NULL;
}

/* a cached block of rounded size n from the free lists, or NULL */
static void *take_cached(std::unordered_map<size_t, std::vector<void *>> &lists, size_t n) {
  auto it = lists.find(n);
  if (it == lists.end() || it->second.empty()) return NULL;
  void *p = it->second.back();
  it->second.pop_back();
  return p;
}

/* a block for a graph being captured: its pool's own free blocks first (the
** capture's order is the replay's), then an idle block of the shared cache,
** which then belongs to the graph, then a new one */
static void *capture_alloc(size_t n) {
  void *p = take_cached(capturing->free, n);
  if (!p) {
    p = take_cached(*free_blocks, n);
    if (p) cached_bytes -= n;
  }
  if (!p) p = raw_malloc(n);
  if (!p) return NULL;
  (*pool_of)[p] = capturing;
  capturing->live++;
  return p;
}

static void *cuda_alloc(size_t nbytes) {
  size_t n = round_size(nbytes);
  void *p = NULL;
  if (capturing) {
    /* no pressure path here: emptying the cache synchronises, which a capture forbids */
    p = capture_alloc(n);
  } else {
    p = take_cached(*free_blocks, n);
    if (p) cached_bytes -= n;
    if (!p) p = raw_malloc(n);
    if (!p) {   /* pressure: give back the cache, let the host collect garbage, try again */
      cuda_empty_cache();
      p = raw_malloc(n);
      if (!p && host && host->reclaim) {
        host->reclaim();
        cuda_empty_cache();
        p = raw_malloc(n);
      }
    }
  }
  if (!p) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    fdm_cuda_seterror("cuda: out of memory%s: asked for %.1f MiB, %.1f MiB free of %.1f MiB "
                   "(%.1f MiB held by fdm's tensors)", capturing ? " during a graph capture" : "",
                   nbytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0, live_bytes / 1048576.0);
    return NULL;
  }
  live_bytes += nbytes;
  if (live_bytes > peak_bytes) peak_bytes = live_bytes;
  nallocs++;
  return p;
}

static void cache_block(void *p, size_t n) {
  (*free_blocks)[n].push_back(p);
  cached_bytes += n;
}

static void pool_delete_if_done(fdm_cuda_pool *pool) {
  if (pool->dropped && pool->live == 0) delete pool;
}

/* A block of a graph's pool goes back to that pool (the graph's replays
** still use it) until the graph is freed, then to the shared cache. While a
** capture runs, every released block joins the capturing graph's pool: the
** captured work may still use it at replay. */
static void cuda_release(void *p, size_t nbytes) {
  if (!p) return;
  size_t n = round_size(nbytes);
  live_bytes -= nbytes;
  auto it = pool_of->find(p);
  if (it != pool_of->end()) {
    fdm_cuda_pool *pool = it->second;
    pool->live--;
    if (pool->dropped) {
      pool_of->erase(it);
      cache_block(p, n);
      pool_delete_if_done(pool);
    } else {
      pool->free[n].push_back(p);
    }
    return;
  }
  if (capturing) {
    (*pool_of)[p] = capturing;
    capturing->free[n].push_back(p);
    return;
  }
  cache_block(p, n);
}

fdm_cuda_pool *fdm_cuda_pool_new(void) { return new fdm_cuda_pool(); }

void fdm_cuda_pool_capture(fdm_cuda_pool *pool) {
  if (!pool && capturing && cap_grow_buf) {   /* the capture's scratch buffer stays the graph's */
    cuda_release(cap_grow_buf, cap_grow_size);
    cap_grow_buf = NULL;
    cap_grow_size = 0;
  }
  capturing = pool;
}

int fdm_cuda_capturing(void) { return capturing != NULL; }

/* the graph is gone (after its work finished): free blocks go to the shared
** cache, live ones when their tensors release them */
void fdm_cuda_pool_drop(fdm_cuda_pool *pool) {
  if (!pool) return;
  for (auto &kv : pool->free)
    for (void *p : kv.second) {
      pool_of->erase(p);
      cache_block(p, kv.first);
    }
  pool->free.clear();
  pool->dropped = 1;
  pool_delete_if_done(pool);
}

void *fdm_cuda_scratch_alloc(size_t nbytes, const char *what) {
  void *p = cuda_alloc(nbytes);
  if (!p) {
    char msg[sizeof last_error];
    snprintf(msg, sizeof msg, "%s", last_error);
    fdm_cuda_seterror("%s: scratch memory: %s", what, msg);
  }
  return p;
}

void fdm_cuda_scratch_release(void *p, size_t nbytes) { cuda_release(p, nbytes); }

/* a capture grows its own buffer (from the graph's pool): the shared one may
** be replaced by later work while the graph's replays still use it */
void *fdm_cuda_scratch(size_t nbytes) {
  void **buf = capturing ? &cap_grow_buf : &grow_buf;
  size_t *size = capturing ? &cap_grow_size : &grow_size;
  if (nbytes <= *size && *buf) return *buf;
  if (*buf) cuda_release(*buf, *size);   /* queued work still using it runs first */
  *buf = NULL;
  *size = 0;
  void *p = fdm_cuda_scratch_alloc(nbytes, "cuda scratch");
  if (!p) return NULL;
  *buf = p;
  *size = nbytes;
  return p;
}

static int cuda_memset0(void *p, size_t n) {
  if (n == 0) return 0;
  return fdm_cuda_check(cudaMemsetAsync(p, 0, n, stream), "cuda memset");
}

/* a capture records work without running it, and copies with the host wait for the stream */
static int refuse_in_capture(const char *what) {
  return fdm_cuda_seterror("%s: cannot copy between the host and the GPU while a CUDA graph is being captured "
                           "(a value read on the host, a tensor moved between devices, an index check): "
                           "do it outside the captured function", what);
}

int fdm_cuda_to_device(void *dst, const void *src, size_t n) {
  if (n == 0) return 0;
  if (capturing) return refuse_in_capture("cuda upload");
  /* the host buffer may be freed as soon as we return: wait for the copy */
  if (fdm_cuda_check(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream), "cuda upload")) return -1;
  return fdm_cuda_check(cudaStreamSynchronize(stream), "cuda upload");
}

int fdm_cuda_to_host(void *dst, const void *src, size_t n) {
  if (n == 0) return 0;
  if (capturing) return refuse_in_capture("cuda download");
  if (fdm_cuda_check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream), "cuda download")) return -1;
  return fdm_cuda_check(cudaStreamSynchronize(stream), "cuda download");
}

static int cuda_upload(void *dst, const void *src, size_t n) { nuploads++; return fdm_cuda_to_device(dst, src, n); }
static int cuda_download(void *dst, const void *src, size_t n) { ndownloads++; return fdm_cuda_to_host(dst, src, n); }
static int cuda_synchronize(void) {
  if (capturing) return fdm_cuda_seterror("cuda synchronize: not possible while a graph is being captured");
  return fdm_cuda_check(cudaStreamSynchronize(stream), "cuda synchronize");
}

static void cuda_stats(fdm_backend_stats *st) {
  memset(st, 0, sizeof *st);
  st->live_bytes = live_bytes;
  st->cached_bytes = cached_bytes;
  st->allocs = nallocs;
  st->uploads = nuploads;
  st->downloads = ndownloads;
}

/* the driver's free memory plus the cache fdm would give back for it */
static int cuda_mem_info(size_t *available, size_t *total) {
  size_t free_b = 0, total_b = 0;
  cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fdm_cuda_seterror("cuda: cudaMemGetInfo failed: %s", cudaGetErrorString(e));
  }
  *available = free_b + cached_bytes;
  *total = total_b;
  return 0;
}

static fdm_kernels kernels;
static const fdm_backend cuda_backend = {
  "cuda", cuda_alloc, cuda_release, cuda_memset0, cuda_upload, cuda_download, cuda_synchronize,
  cuda_empty_all, cuda_stats, &kernels, fdm_cuda_graph_begin, fdm_cuda_graph_end, fdm_cuda_graph_replay,
  fdm_cuda_graph_free, cuda_mem_info};

static int setup_failed(const char *what) {
  if (cublas_workspace) { cudaFree(cublas_workspace); cublas_workspace = NULL; }
  if (cudnn) { cudnnDestroy(cudnn); cudnn = NULL; }
  if (cublas) { cublasDestroy(cublas); cublas = NULL; }
  if (stream) { cudaStreamDestroy(stream); stream = NULL; }
  (void)what;
  return -1;
}

extern "C" __attribute__((visibility("default"))) int fdm_backend_plugin_register(const fdm_plugin_host *h) {
  if (!h) return -1;
  if (h->abi != FDM_PLUGIN_ABI)
    return h->seterror("the CUDA plugin was built for plugin ABI %d, this fdm has %d: rebuild it (make)",
                       FDM_PLUGIN_ABI, h->abi);
  host = h;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fdm_cuda_seterror("no CUDA device: cudaGetDeviceCount failed with error %d (%s)", (int)e,
                          cudaGetErrorString(e));
  }
  if (count < 1) return fdm_cuda_seterror("no CUDA device: the driver reports none");
  const char *dev_env = getenv("FDM_CUDA_DEVICE");
  device_id = dev_env && *dev_env ? atoi(dev_env) : 0;
  if (device_id < 0 || device_id >= count)
    return fdm_cuda_seterror("FDM_CUDA_DEVICE=%d: there are %d CUDA devices", device_id, count);
  if (fdm_cuda_check(cudaSetDevice(device_id), "no usable CUDA device: cudaSetDevice")) return -1;
  cudaDeviceProp prop;
  if (fdm_cuda_check(cudaGetDeviceProperties(&prop, device_id), "no usable CUDA device: cudaGetDeviceProperties"))
    return -1;
  sm_count = prop.multiProcessorCount;
  if (fdm_cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "no usable CUDA device: stream"))
    return setup_failed("stream");
  cublasStatus_t bs = cublasCreate(&cublas);
  if (bs != CUBLAS_STATUS_SUCCESS) {
    cublas = NULL;
    fdm_cuda_seterror("CUDA device unusable: cuBLAS did not start (cublasCreate: %s)", cublasGetStatusString(bs));
    return setup_failed("cublas");
  }
  cublasSetStream(cublas, stream);
  int tf32 = fdm_cuda_tf32();
  tf32_mode = tf32;
  cublasSetMathMode(cublas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
  cudnnStatus_t ds = cudnnCreate(&cudnn);
  if (ds != CUDNN_STATUS_SUCCESS) {
    cudnn = NULL;
    fdm_cuda_seterror("CUDA device unusable: cuDNN did not start (cudnnCreate: %s)", cudnnGetErrorString(ds));
    return setup_failed("cudnn");
  }
  cudnnSetStream(cudnn, stream);
  /* a workspace of our own (after cublasSetStream, which resets it): cuBLAS
  ** then allocates nothing while a graph is captured */
  if (fdm_cuda_check(cudaMalloc(&cublas_workspace, CUBLAS_WORKSPACE_BYTES), "cuBLAS workspace") ||
      fdm_cuda_cublas_check(cublasSetWorkspace(cublas, cublas_workspace, CUBLAS_WORKSPACE_BYTES),
                            "cuBLAS workspace"))
    return setup_failed("cublas workspace");
  free_blocks = new std::unordered_map<size_t, std::vector<void *>>();
  pool_of = new std::unordered_map<void *, fdm_cuda_pool *>();
#define FDM_CUDA_SLOT(name, params) kernels.name = cuda_kernel_##name;
  FDM_ALL_KERNELS(FDM_CUDA_SLOT)
#undef FDM_CUDA_SLOT
  return h->register_backend(FDM_CUDA, &cuda_backend);
}
