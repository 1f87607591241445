/*
** bench/cudnn_probe.cu: how fast cuDNN runs the UNets' convolutions through
** the legacy API (what kernels/cuda/nn_conv_cudnn.cu calls) and through the
** graph (backend) API, NCHW and NHWC, on one GPU. A measurement program,
** not part of fdm: it answers whether moving nn_conv_cudnn.cu to the graph
** API (and to NHWC activations) is worth it before that is built (docs/cuda.md,
** "Speed": fdm's sampler forward runs cuDNN at 34 TFLOP/s where PyTorch, on
** the graph API, reaches 50).
**
**   build/gpu/bin/cudnn_probe [SECONDS]     (tools/gpu-bundle.sh builds it;
**                                             GPU_CHECK_PARTS=tune runs it)
**
** For each geometry and direction (forward, backward data, backward filter),
** float32 tensors with float32 compute, TF32 tensor cores allowed:
**   legacy   cudnnFind*AlgorithmEx on real buffers, workspace up to 8 GiB: the
**            fastest algorithm, and the fastest within fdm's default 1 GiB
**   graph    the plugin's FDM_CUDNN_API=graph builder (nn_conv_cudnn_graph.cu)
**            in timed mode: the fastest engine config of the heuristics (mode
**            A, then fallback; median of 3 after a warm-up), with NCHW and
**            with NHWC strides
** One line per geometry and direction with ms and TFLOP/s of each; stops
** starting new geometries after SECONDS (default 100).
*/
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <algorithm>
#include "nn_conv_cudnn_graph.cuh"

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    fprintf(stderr, "cuda error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); exit(1); } } while (0)
#define DK(x) do { cudnnStatus_t s_ = (x); if (s_ != CUDNN_STATUS_SUCCESS) { \
    fprintf(stderr, "cudnn error %s at %s:%d\n", cudnnGetErrorString(s_), __FILE__, __LINE__); exit(1); } } while (0)

struct Geo { const char *what; int n, c, k, h, w, r, stride, pad; };
static const Geo GEOS[] = {
  { "sampler D=64 28x28", 2000, 64, 64, 28, 28, 3, 1, 1 },
  { "sampler D=64 28x28 down", 2000, 64, 64, 28, 28, 3, 2, 1 },
  { "sampler D=64 14x14 (2D)", 2000, 128, 128, 14, 14, 3, 1, 1 },
  { "D=128 step 28x28", 256, 128, 128, 28, 28, 3, 1, 1 },
  { "D=128 step 14x14 (2D)", 256, 256, 256, 14, 14, 3, 1, 1 },
  { "cc step D=64 28x28", 64, 64, 64, 28, 28, 3, 1, 1 },
};
enum Dir { FWD, BWD_DATA, BWD_FILTER };
static const char *DIR_NAME[] = { "fwd", "bwd_data", "bwd_filter" };

static const size_t WS_MAX = (size_t)8 << 30, WS_FDM = (size_t)1 << 30;

static double now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* median of 5 timed runs (after one untimed) of f, in ms; < 0 when a run fails */
template <typename F> static float time_ms(F f) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  float ms[5];
  bool ok = f();
  for (int i = 0; ok && i < 5; i++) {
    CK(cudaEventRecord(a));
    ok = f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    CK(cudaEventElapsedTime(&ms[i], a, b));
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  if (!ok) { (void)cudaGetLastError(); return -1; }
  std::sort(ms, ms + 5);
  return ms[2];
}

struct Bufs { float *x, *w, *y; void *ws; };

/* ---- legacy API ---- */
struct Legacy { float best, best_fdm; int algo, algo_fdm; size_t mem; };

static Legacy legacy(cudnnHandle_t h, const Geo &g, int oh, int ow, Dir d, Bufs &b) {
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  DK(cudnnCreateTensorDescriptor(&xd));
  DK(cudnnCreateTensorDescriptor(&yd));
  DK(cudnnCreateFilterDescriptor(&wd));
  DK(cudnnCreateConvolutionDescriptor(&cd));
  DK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, g.n, g.c, g.h, g.w));
  DK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, g.n, g.k, oh, ow));
  DK(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, g.k, g.c, g.r, g.r));
  DK(cudnnSetConvolution2dDescriptor(cd, g.pad, g.pad, g.stride, g.stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                     CUDNN_DATA_FLOAT));
  DK(cudnnSetConvolutionMathType(cd, CUDNN_TENSOR_OP_MATH));
  Legacy r = { -1, -1, -1, -1, 0 };
  int n = 0;
  auto take = [&](float t, size_t mem, int algo, cudnnStatus_t st) {
    if (st != CUDNN_STATUS_SUCCESS || t < 0) return;
    if (r.best < 0 || t < r.best) { r.best = t; r.algo = algo; r.mem = mem; }
    if (mem <= WS_FDM && (r.best_fdm < 0 || t < r.best_fdm)) { r.best_fdm = t; r.algo_fdm = algo; }
  };
  if (d == FWD) {
    cudnnConvolutionFwdAlgoPerf_t p[16];
    DK(cudnnFindConvolutionForwardAlgorithmEx(h, xd, b.x, wd, b.w, cd, yd, b.y, 16, &n, p, b.ws, WS_MAX));
    for (int i = 0; i < n; i++) take(p[i].time, p[i].memory, (int)p[i].algo, p[i].status);
  } else if (d == BWD_DATA) {
    cudnnConvolutionBwdDataAlgoPerf_t p[16];
    DK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, wd, b.w, yd, b.y, cd, xd, b.x, 16, &n, p, b.ws, WS_MAX));
    for (int i = 0; i < n; i++) take(p[i].time, p[i].memory, (int)p[i].algo, p[i].status);
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t p[16];
    DK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, xd, b.x, yd, b.y, cd, wd, b.w, 16, &n, p, b.ws, WS_MAX));
    for (int i = 0; i < n; i++) take(p[i].time, p[i].memory, (int)p[i].algo, p[i].status);
  }
  cudnnDestroyTensorDescriptor(xd);
  cudnnDestroyTensorDescriptor(yd);
  cudnnDestroyFilterDescriptor(wd);
  cudnnDestroyConvolutionDescriptor(cd);
  return r;
}

/* ---- graph API: the plugin's own builder (kernels/cuda/nn_conv_cudnn_graph.cu), timed ---- */
static cg_plan graph(cudnnHandle_t h, const Geo &g, int oh, int ow, Dir d, bool nhwc) {
  cg_geom geo = {g.n, g.c, g.h, g.w, g.k, oh, ow, 1, g.r, g.r, g.pad, g.pad, g.stride, g.stride, 1, 1, nhwc ? 1 : 0};
  cg_plan p = {NULL, -1, 0, -1};
  char why[200];
  int rc = cg_build(h, &geo, (int)d, 1, WS_MAX, 1, -1.0f, &p, why, sizeof why);
  if (rc != 0) {
    fprintf(stderr, "cudnn_probe: graph API %s %s: %s\n", DIR_NAME[d], nhwc ? "NHWC" : "NCHW", why);
    p.ms = -1;
  }
  return p;
}

int main(int argc, char **argv) {
  double budget = argc > 1 ? atof(argv[1]) : 100.0, t0 = now();
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("cudnn_probe: no CUDA device: skipped\n");
    return 0;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  cudnnHandle_t h;
  DK(cudnnCreate(&h));
  printf("cudnn_probe: %s, cuDNN %zu; float32 data, float32 compute, TF32 tensor cores allowed; ms per call "
         "(median of 5), TFLOP/s\n", prop.name, cudnnGetVersion());
  for (const Geo &g : GEOS) {
    if (now() - t0 > budget) { printf("cudnn_probe: time budget (%.0f s) spent, stopping\n", budget); break; }
    int oh = (g.h + 2 * g.pad - g.r) / g.stride + 1, ow = (g.w + 2 * g.pad - g.r) / g.stride + 1;
    Bufs b;
    size_t nx = (size_t)g.n * g.c * g.h * g.w, nw = (size_t)g.k * g.c * g.r * g.r, ny = (size_t)g.n * g.k * oh * ow;
    CK(cudaMalloc(&b.x, nx * 4));
    CK(cudaMalloc(&b.w, nw * 4));
    CK(cudaMalloc(&b.y, ny * 4));
    CK(cudaMalloc(&b.ws, WS_MAX));
    CK(cudaMemset(b.x, 0, nx * 4));
    CK(cudaMemset(b.w, 0, nw * 4));
    CK(cudaMemset(b.y, 0, ny * 4));
    double flop = 2.0 * ny * g.c * g.r * g.r;
    for (int d = FWD; d <= BWD_FILTER; d++) {
      Legacy l = legacy(h, g, oh, ow, (Dir)d, b);
      cg_plan a = graph(h, g, oh, ow, (Dir)d, false), c = graph(h, g, oh, ow, (Dir)d, true);
      auto tf = [&](float ms) { return ms > 0 ? flop / (ms * 1e-3) / 1e12 : 0.0; };
      printf("%-26s N%-4d C%-3d K%-3d %2dx%-2d s%d %-10s | legacy %7.3f ms %5.1f TF (algo %d, %zu MiB; within 1 GiB "
             "%7.3f ms algo %d) | graph NCHW %7.3f ms %5.1f TF (engine %lld, %zu MiB) | graph NHWC %7.3f ms %5.1f TF "
             "(engine %lld, %zu MiB)\n",
             g.what, g.n, g.c, g.k, g.h, g.w, g.stride, DIR_NAME[d], l.best, tf(l.best), l.algo, l.mem >> 20,
             l.best_fdm, l.algo_fdm, a.ms, tf(a.ms), (long long)a.engine, a.ws_bytes >> 20, c.ms, tf(c.ms),
             (long long)c.engine, c.ws_bytes >> 20);
      cg_destroy(&a);
      cg_destroy(&c);
      fflush(stdout);
    }
    cudaFree(b.x);
    cudaFree(b.w);
    cudaFree(b.y);
    cudaFree(b.ws);
  }
  cudnnDestroy(h);
  printf("cudnn_probe: done in %.0f s\n", now() - t0);
  return 0;
}
