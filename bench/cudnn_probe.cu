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
**   graph    every engine config of the heuristics (mode A, then fallback),
**            each timed (median of 5 after a warm-up), NCHW and NHWC strides
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
#include <vector>

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

/* ---- graph API ---- */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"   /* the plan's and graph's HANDLE attributes */

static cudnnBackendDescriptor_t tensor(int64_t uid, const int64_t dims[4], bool nhwc) {
  cudnnBackendDescriptor_t t;
  DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t));
  int64_t c = dims[1], h = dims[2], w = dims[3];
  int64_t nchw[4] = { c * h * w, h * w, w, 1 }, nhwc_s[4] = { h * w * c, 1, w * c, c };
  cudnnDataType_t f = CUDNN_DATA_FLOAT;
  int64_t align = 16;
  DK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f));
  DK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
  DK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, nhwc ? nhwc_s : nchw));
  DK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
  DK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
  DK(cudnnBackendFinalize(t));
  return t;
}

struct Graph { float best; int64_t engine; bool tc; size_t mem; int tried, ran; };

static Graph graph(cudnnHandle_t h, const Geo &g, int oh, int ow, Dir d, Bufs &b, bool nhwc) {
  const int64_t X = 'x', W = 'w', Y = 'y';
  int64_t xdim[4] = { g.n, g.c, g.h, g.w }, wdim[4] = { g.k, g.c, g.r, g.r }, ydim[4] = { g.n, g.k, oh, ow };
  cudnnBackendDescriptor_t xt = tensor(X, xdim, nhwc), wt = tensor(W, wdim, nhwc), yt = tensor(Y, ydim, nhwc);
  cudnnBackendDescriptor_t conv;
  DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &conv));
  int64_t dims = 2, pad[2] = { g.pad, g.pad }, str[2] = { g.stride, g.stride }, dil[2] = { 1, 1 };
  cudnnDataType_t f = CUDNN_DATA_FLOAT;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  DK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims));
  DK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f));
  DK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
  DK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
  DK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
  DK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil));
  DK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, str));
  DK(cudnnBackendFinalize(conv));

  cudnnBackendDescriptor_t op;
  float alpha = 1.0f, beta = 0.0f;
  if (d == FWD) {
    DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, &op));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xt));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wt));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yt));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta));
  } else if (d == BWD_DATA) {
    DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR, &op));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xt));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wt));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yt));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_TYPE_FLOAT, 1, &beta));
  } else {
    DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR, &op));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xt));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wt));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yt));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha));
    DK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, CUDNN_TYPE_FLOAT, 1, &beta));
  }
  DK(cudnnBackendFinalize(op));
  cudnnBackendDescriptor_t og;
  DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &og));
  DK(cudnnBackendSetAttribute(og, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op));
  DK(cudnnBackendSetAttribute(og, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h));
  DK(cudnnBackendFinalize(og));

  Graph r = { -1, -1, false, 0, 0, 0 };
  void *ptrs[3] = { b.x, b.w, b.y };
  int64_t uids[3] = { X, W, Y };
  const cudnnBackendHeurMode_t modes[2] = { CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK };
  std::vector<int64_t> seen;
  for (cudnnBackendHeurMode_t hm : modes) {
    cudnnBackendDescriptor_t heur;
    DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
    DK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &og));
    DK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &hm));
    if (cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS) { cudnnBackendDestroyDescriptor(heur); continue; }
    int64_t count = 0;
    DK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, NULL));
    std::vector<cudnnBackendDescriptor_t> cfgs(count);
    for (auto &c : cfgs) DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &c));
    int64_t got = 0;
    if (count > 0)
      DK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                  cfgs.data()));
    for (int64_t i = 0; i < got && i < 24; i++) {
      /* the engine's global index and whether it uses tensor cores */
      cudnnBackendDescriptor_t eng;
      DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng));
      int64_t ne = 0, gidx = -1;
      bool tc = false;
      if (cudnnBackendGetAttribute(cfgs[i], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ne, &eng) ==
          CUDNN_STATUS_SUCCESS) {
        cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &ne, &gidx);
        cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
        int64_t nn = 0;
        if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                     CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &nn, notes) == CUDNN_STATUS_SUCCESS)
          for (int64_t k = 0; k < nn; k++) tc = tc || notes[k] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE;
      }
      cudnnBackendDestroyDescriptor(eng);
      if (std::find(seen.begin(), seen.end(), gidx) != seen.end()) continue;
      seen.push_back(gidx);
      r.tried++;
      cudnnBackendDescriptor_t plan;
      DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan));
      DK(cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h));
      DK(cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                  &cfgs[i]));
      int64_t ws = 0, nw = 0;
      if (cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
          cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &nw, &ws) ==
              CUDNN_STATUS_SUCCESS &&
          (size_t)ws <= WS_MAX) {
        cudnnBackendDescriptor_t vp;
        DK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp));
        DK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs));
        DK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids));
        DK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &b.ws));
        DK(cudnnBackendFinalize(vp));
        float t = time_ms([&] { return cudnnBackendExecute(h, plan, vp) == CUDNN_STATUS_SUCCESS; });
        if (t >= 0) {
          r.ran++;
          if (r.best < 0 || t < r.best) { r.best = t; r.engine = gidx; r.tc = tc; r.mem = (size_t)ws; }
        }
        cudnnBackendDestroyDescriptor(vp);
      }
      cudnnBackendDestroyDescriptor(plan);
    }
    for (auto &c : cfgs) cudnnBackendDestroyDescriptor(c);
    cudnnBackendDestroyDescriptor(heur);
  }
  cudnnBackendDestroyDescriptor(og);
  cudnnBackendDestroyDescriptor(op);
  cudnnBackendDestroyDescriptor(conv);
  cudnnBackendDestroyDescriptor(xt);
  cudnnBackendDestroyDescriptor(wt);
  cudnnBackendDestroyDescriptor(yt);
  return r;
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
      Graph a = graph(h, g, oh, ow, (Dir)d, b, false), c = graph(h, g, oh, ow, (Dir)d, b, true);
      auto tf = [&](float ms) { return ms > 0 ? flop / (ms * 1e-3) / 1e12 : 0.0; };
      printf("%-26s N%-4d C%-3d K%-3d %2dx%-2d s%d %-10s | legacy %7.3f ms %5.1f TF (algo %d, %zu MiB; within 1 GiB "
             "%7.3f ms algo %d) | graph NCHW %7.3f ms %5.1f TF (engine %lld%s, %zu MiB; %d/%d ran) | graph NHWC %7.3f "
             "ms %5.1f TF (engine %lld%s; %d/%d ran)\n",
             g.what, g.n, g.c, g.k, g.h, g.w, g.stride, DIR_NAME[d], l.best, tf(l.best), l.algo, l.mem >> 20,
             l.best_fdm, l.algo_fdm, a.best, tf(a.best), (long long)a.engine, a.tc ? " tc" : "", a.mem >> 20, a.ran,
             a.tried, c.best, tf(c.best), (long long)c.engine, c.tc ? " tc" : "", c.ran, c.tried);
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
