/*
** nn_conv_cudnn.cu: conv2d and conv_transpose2d through cuDNN's legacy
** convolution API (cudnn_cnn), grouped and dilated as the CPU supports.
**
** Both ops are one conv2d relation between an "input" image and an "output"
** image through a filter [out channels, in channels / groups, kh, kw]:
**   conv2d            input x [N,C,H,W], output y [N,K,OH,OW], filter w [K, C/G, kh, kw]
**   conv_transpose2d  input y [N,K,OH,OW], output x [N,C,H,W], filter w [C, K/G, kh, kw]
** so conv_transpose2d's forward is the conv2d's backward-data, its data
** gradient is the conv2d's forward and its weight gradient the conv2d's
** backward-filter with the roles of the images swapped.
**
** Plans: the descriptors and the three algorithms (forward, backward-data,
** backward-filter) of one geometry are chosen once and cached in a small
** open-addressing hash map keyed by (geometry, transposed, TF32). The
** algorithms come from cuDNN's heuristics (cudnnGet*Algorithm_v7: the first
** supported one whose workspace fits the limit); FDM_CUDNN_BENCHMARK=1 times
** them instead (cudnnFind*Algorithm, once per geometry, like PyTorch's
** cudnn.benchmark). FDM_CUDNN_WORKSPACE_MB (default 1024) caps the
** workspace of a candidate. The *_work slot returns, in floats, the
** largest workspace of the three chosen algorithms (one scratch serves the
** forward and the backward pass) plus room for the weight widened to
** float32 when it is float16/bfloat16.
**
** FDM_CUDNN_LOG=1 prints each plan's candidates and choices (log_direction).
**
** FDM_CUDNN_API=graph (float32 only; not the default until measured on a
** GPU): each direction whose graph-API plan builds (nn_conv_cudnn_graph.cu;
** timed mode: one faster than the legacy algorithm) runs through it; the
** others, autocast and misaligned operands keep the legacy calls.
**
** TF32 (nn_tf32(), FDM_TF32=1): CUDNN_TENSOR_OP_MATH, else CUDNN_FMA_MATH
** and only FMA algorithms, so float32 results match the CPU's rounding.
**
** Autocast (p->autocast, part of the plan's key): the images and the filter
** are bfloat16 (or float16) descriptors with float compute, cuDNN's
** PSEUDO_BFLOAT16/PSEUDO_HALF configuration on tensor cores. Each cuDNN call
** narrows its float32 operands into the work buffer (cuda_autocast.cuh;
** the *_work slot then counts the narrowed images and filter instead of the
** widened weight) and widens its result back to float32 (run_dir). cuDNN
** writes that result in bfloat16, so unlike cuBLAS (float32 C) the
** convolution's output and gradients carry one more rounding, as PyTorch's
** autocast outputs do.
** Bias add and bias gradient are this file's own kernels (the gradient sums
** in double, as kernels/cpu/conv.c, split over blocks per channel).
*/
#include <stdio.h>
#include "nn_common.cuh"
#include "cuda_autocast.cuh"
#include "nn_conv_cudnn_graph.cuh"

#define PLAN_SLOTS 256        /* cached geometries; all are dropped when full */
#define WS_ALIGN_FLOATS 64    /* the widened weight starts 256 bytes into alignment */

typedef struct {
  int used;
  fdm_conv_params p;
  int transposed, tf32;
  cudnnTensorDescriptor_t in, out;   /* the conv2d relation's input and output images */
  cudnnFilterDescriptor_t filt;
  cudnnConvolutionDescriptor_t conv;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  size_t ws_bytes;                   /* max over the three algorithms */
  int64_t w_floats;                  /* filter elements */
  /* conv_transpose2d with output_padding >= stride (allowed when smaller than
  ** the dilation): the relation's output image is hr x wr, larger than x's
  ** H x W; x is used zero-padded to that size (pad_floats in the work buffer) */
  int hr, wr;
  int64_t pad_floats;
  int64_t in_elems, out_elems;       /* the relation's images (the output hr x wr) */
  /* FDM_CUDNN_API=graph: graph-API plans of the directions that have one (float32 only; see cg_build) */
  cg_plan graph[3];
  int has_graph[3];
} conv_plan;

static conv_plan plans[PLAN_SLOTS];
static int plans_used;

static void plan_destroy(conv_plan *c) {
  if (c->in) cudnnDestroyTensorDescriptor(c->in);
  if (c->out) cudnnDestroyTensorDescriptor(c->out);
  if (c->filt) cudnnDestroyFilterDescriptor(c->filt);
  if (c->conv) cudnnDestroyConvolutionDescriptor(c->conv);
  for (int d = 0; d < 3; d++) if (c->has_graph[d]) cg_destroy(&c->graph[d]);
  memset(c, 0, sizeof *c);
}

static uint64_t plan_hash(const fdm_conv_params *p, int transposed, int tf32) {
  const unsigned char *b = (const unsigned char *)p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < sizeof *p; i++) h = (h ^ b[i]) * 1099511628211ULL;
  h = (h ^ (uint64_t)(transposed * 2 + tf32)) * 1099511628211ULL;
  return h;
}

static int same_key(const conv_plan *c, const fdm_conv_params *p, int transposed, int tf32) {
  return c->used && c->transposed == transposed && c->tf32 == tf32 && !memcmp(&c->p, p, sizeof *p);
}

static size_t ws_limit(void) {
  static size_t lim = 0;
  if (!lim) {
    const char *e = getenv("FDM_CUDNN_WORKSPACE_MB");
    long mb = e && *e ? atol(e) : 1024;
    if (mb < 0) mb = 0;
    lim = ((size_t)mb << 20) + 1;   /* +1: nonzero even for a limit of 0 */
  }
  return lim - 1;
}

static int benchmark_mode(void) {
  static int on = -1;
  if (on < 0) { const char *e = getenv("FDM_CUDNN_BENCHMARK"); on = e && *e && *e != '0'; }
  return on;
}

/* FDM_CUDNN_LOG=1: one stderr line per plan built, with the candidates of
** each direction (algorithm, time when timed, workspace; * = chosen), to see
** what a geometry gets and what the workspace limit rules out */
static int log_mode(void) {
  static int on = -1;
  if (on < 0) { const char *e = getenv("FDM_CUDNN_LOG"); on = e && *e && *e != '0'; }
  return on;
}
template <typename Perf>
static void log_direction(const char *what, const Perf *r, int n, int chosen) {
  fprintf(stderr, "  %s", what);
  for (int i = 0, shown = 0; i < n && shown < 5; i++) {
    if (r[i].status != CUDNN_STATUS_SUCCESS) continue;
    fprintf(stderr, " %s%d:%.3fms/%zuMiB", (int)r[i].algo == chosen ? "*" : "", (int)r[i].algo, (double)r[i].time,
            r[i].memory >> 20);
    shown++;
  }
}

/* the measured time of algorithm a among the timed results, -1 if it has none */
template <typename Perf, typename Algo>
static float time_of(const Perf *r, int n, Algo a) {
  for (int i = 0; i < n; i++)
    if (r[i].algo == a && r[i].status == CUDNN_STATUS_SUCCESS) return r[i].time;
  return -1;
}

/* the first usable result: supported, within the workspace limit; without
** TF32 only FMA (or default-math) ones, the descriptor being FMA_MATH too */
template <typename Perf, typename Algo>
static int pick(const char *op, const Perf *r, int n, int tf32, Algo *dst, const char *what) {
  for (int i = 0; i < n; i++) {
    if (r[i].status != CUDNN_STATUS_SUCCESS || r[i].memory > ws_limit()) continue;
    if (!tf32 && r[i].mathType != CUDNN_FMA_MATH && r[i].mathType != CUDNN_DEFAULT_MATH) continue;
    *dst = r[i].algo;
    return 0;
  }
  return fdm_cuda_seterror("%s: cuDNN offers no %s algorithm for this geometry within a %zu MiB workspace "
                           "(FDM_CUDNN_WORKSPACE_MB)", op, what, ws_limit() >> 20);
}

static int plan_build(const char *op, cudnnHandle_t h, conv_plan *c) {
  const fdm_conv_params *p = &c->p;
  int cast = p->autocast != FDM_FLOAT32;
  cudnnDataType_t dt = cast ? cuda_autocast_cudnn_type(p->autocast) : CUDNN_DATA_FLOAT;
  int tensor_ops = c->tf32 || cast;   /* bfloat16/float16 convolutions run on tensor cores */
  int G = p->groups > 0 ? p->groups : 1;
  /* conv2d relation: in channels ci over (hi, wi), out channels co over (ho, wo) */
  int ci = c->transposed ? p->K : p->C, co = c->transposed ? p->C : p->K;
  int hi = c->transposed ? p->OH : p->H, wi = c->transposed ? p->OW : p->W;
  int ho = c->transposed ? p->H : p->OH, wo = c->transposed ? p->W : p->OW;
  NN_CUDNN(op, cudnnCreateTensorDescriptor(&c->in));
  NN_CUDNN(op, cudnnCreateTensorDescriptor(&c->out));
  NN_CUDNN(op, cudnnCreateFilterDescriptor(&c->filt));
  NN_CUDNN(op, cudnnCreateConvolutionDescriptor(&c->conv));
  NN_CUDNN(op, cudnnSetTensor4dDescriptor(c->in, CUDNN_TENSOR_NCHW, dt, p->N, ci, hi, wi));
  NN_CUDNN(op, cudnnSetFilter4dDescriptor(c->filt, dt, CUDNN_TENSOR_NCHW, co, ci / G, p->kh, p->kw));
  NN_CUDNN(op, cudnnSetConvolution2dDescriptor(c->conv, p->ph, p->pw, p->sh, p->sw, p->dh, p->dw,
                                               CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  NN_CUDNN(op, cudnnSetConvolutionGroupCount(c->conv, G));
  NN_CUDNN(op, cudnnSetConvolutionMathType(c->conv, tensor_ops ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  int n_, c_, h_, w_;
  NN_CUDNN(op, cudnnGetConvolution2dForwardOutputDim(c->conv, c->in, c->filt, &n_, &c_, &h_, &w_));
  int larger = c->transposed && h_ >= ho && w_ >= wo;   /* output_padding >= stride: zero-padded x */
  if (n_ != p->N || c_ != co || ((h_ != ho || w_ != wo) && !larger))
    return fdm_cuda_seterror("%s: cuDNN computes an output [%d, %d, %d, %d] where [%d, %d, %d, %d] was expected",
                             op, n_, c_, h_, w_, p->N, co, ho, wo);
  c->hr = h_;
  c->wr = w_;
  c->pad_floats = (h_ != ho || w_ != wo) ? (int64_t)p->N * co * h_ * w_ : 0;
  NN_CUDNN(op, cudnnSetTensor4dDescriptor(c->out, CUDNN_TENSOR_NCHW, dt, p->N, co, h_, w_));
  c->w_floats = (int64_t)co * (ci / G) * p->kh * p->kw;
  c->in_elems = (int64_t)p->N * ci * hi * wi;
  c->out_elems = (int64_t)p->N * co * h_ * w_;

  cudnnConvolutionFwdAlgoPerf_t rf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  cudnnConvolutionBwdDataAlgoPerf_t rd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  cudnnConvolutionBwdFilterAlgoPerf_t rw[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  int nf = 0, nd = 0, nw = 0;
  /* timed (cuDNN allocates its own buffers, once per geometry) where asked for;
  ** a direction whose timing fails (e.g. cuDNN's own allocation) falls back to
  ** the heuristics */
  int timed = benchmark_mode();
  if (!timed || cudnnFindConvolutionForwardAlgorithm(h, c->in, c->filt, c->conv, c->out,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &nf, rf) != CUDNN_STATUS_SUCCESS)
    NN_CUDNN(op, cudnnGetConvolutionForwardAlgorithm_v7(h, c->in, c->filt, c->conv, c->out,
                                                        CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &nf, rf));
  if (!timed || cudnnFindConvolutionBackwardDataAlgorithm(h, c->filt, c->out, c->conv, c->in,
                                                          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, rd) !=
                    CUDNN_STATUS_SUCCESS)
    NN_CUDNN(op, cudnnGetConvolutionBackwardDataAlgorithm_v7(h, c->filt, c->out, c->conv, c->in,
                                                             CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, rd));
  if (!timed || cudnnFindConvolutionBackwardFilterAlgorithm(h, c->in, c->out, c->conv, c->filt,
                                                            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nw, rw) !=
                    CUDNN_STATUS_SUCCESS)
    NN_CUDNN(op, cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, c->in, c->out, c->conv, c->filt,
                                                               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nw, rw));
  /* a failed search may have left cudaErrorMemoryAllocation as the runtime's last
  ** error: clear it, or the next launch check would report it */
  if (timed) (void)cudaGetLastError();
  size_t mf = 0, md = 0, mw = 0;
  /* a timed list with nothing usable (all failed, or too much workspace): the heuristics' */
  if (pick(op, rf, nf, tensor_ops, &c->fwd, "forward")) {
    if (!timed) return -1;
    NN_CUDNN(op, cudnnGetConvolutionForwardAlgorithm_v7(h, c->in, c->filt, c->conv, c->out,
                                                        CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &nf, rf));
    if (pick(op, rf, nf, tensor_ops, &c->fwd, "forward")) return -1;
  }
  if (pick(op, rd, nd, tensor_ops, &c->bwd_data, "backward-data")) {
    if (!timed) return -1;
    NN_CUDNN(op, cudnnGetConvolutionBackwardDataAlgorithm_v7(h, c->filt, c->out, c->conv, c->in,
                                                             CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, rd));
    if (pick(op, rd, nd, tensor_ops, &c->bwd_data, "backward-data")) return -1;
  }
  if (pick(op, rw, nw, tensor_ops, &c->bwd_filter, "backward-filter")) {
    if (!timed) return -1;
    NN_CUDNN(op, cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, c->in, c->out, c->conv, c->filt,
                                                               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nw, rw));
    if (pick(op, rw, nw, tensor_ops, &c->bwd_filter, "backward-filter")) return -1;
  }
  if (log_mode()) {
    fprintf(stderr, "fdm cudnn plan %s: N%d C%d %dx%d K%d %dx%d k%dx%d s%dx%d p%dx%d g%d%s%s%s:", op, p->N, p->C, p->H,
            p->W, p->K, p->OH, p->OW, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw, G, c->tf32 ? " tf32" : "",
            cast ? " autocast" : "", timed ? " timed" : " heuristics");
    log_direction("fwd", rf, nf, (int)c->fwd);
    log_direction("bwd_data", rd, nd, (int)c->bwd_data);
    log_direction("bwd_filter", rw, nw, (int)c->bwd_filter);
    fputc('\n', stderr);
  }
  /* the heuristics' memory is an estimate: ask for the exact sizes of the chosen ones */
  NN_CUDNN(op, cudnnGetConvolutionForwardWorkspaceSize(h, c->in, c->filt, c->conv, c->out, c->fwd, &mf));
  NN_CUDNN(op, cudnnGetConvolutionBackwardDataWorkspaceSize(h, c->filt, c->out, c->conv, c->in, c->bwd_data, &md));
  NN_CUDNN(op, cudnnGetConvolutionBackwardFilterWorkspaceSize(h, c->in, c->out, c->conv, c->filt, c->bwd_filter,
                                                              &mw));
  c->ws_bytes = mf > md ? mf : md;
  if (mw > c->ws_bytes) c->ws_bytes = mw;
  if (cg_enabled() && !cast) {
    /* the graph API where it has an engine (timed: one that beats the legacy algorithm's time) */
    cg_geom geo = {p->N, ci, hi, wi, co, c->hr, c->wr, G, p->kh, p->kw, p->ph, p->pw, p->sh, p->sw, p->dh, p->dw, 0};
    float legacy_ms[3] = {-1, -1, -1};
    if (timed) {
      legacy_ms[0] = time_of(rf, nf, c->fwd);
      legacy_ms[1] = time_of(rd, nd, c->bwd_data);
      legacy_ms[2] = time_of(rw, nw, c->bwd_filter);
    }
    for (int d = 0; d < 3; d++) {
      char why[160];
      int r = cg_build(h, &geo, d, c->tf32, ws_limit(), timed, legacy_ms[d], &c->graph[d], why, sizeof why);
      c->has_graph[d] = r == 0;
      if (r == 0 && c->graph[d].ws_bytes > c->ws_bytes) c->ws_bytes = c->graph[d].ws_bytes;
      if (log_mode()) {
        if (r == 0) fprintf(stderr, "  graph %d: engine %lld, %.3f ms, %zu MiB\n", d, (long long)c->graph[d].engine,
                            (double)c->graph[d].ms, c->graph[d].ws_bytes >> 20);
        else fprintf(stderr, "  graph %d: legacy kept (%s)\n", d, why);
      }
    }
  }
  return 0;
}

/* the cached plan of this geometry, built on first use; NULL with the error set */
static conv_plan *plan_get(const char *op, const fdm_conv_params *p, int transposed) {
  int tf32 = nn_tf32();
  cudnnHandle_t h = fdm_cuda_cudnn();   /* bound to fdm_cuda_stream() by the core */
  if (!h) {
    fdm_cuda_seterror("%s: no cuDNN handle", op);
    return NULL;
  }
  uint64_t hv = plan_hash(p, transposed, tf32);
  for (int probe = 0; probe < PLAN_SLOTS; probe++) {
    conv_plan *c = &plans[(hv + probe) % PLAN_SLOTS];
    if (same_key(c, p, transposed, tf32)) return c;
    if (!c->used) break;
  }
  if (plans_used >= PLAN_SLOTS * 3 / 4) {   /* keep probes short: start over */
    for (int i = 0; i < PLAN_SLOTS; i++) if (plans[i].used) plan_destroy(&plans[i]);
    plans_used = 0;
  }
  conv_plan *c = NULL;
  for (int probe = 0; probe < PLAN_SLOTS && !c; probe++)
    if (!plans[(hv + probe) % PLAN_SLOTS].used) c = &plans[(hv + probe) % PLAN_SLOTS];
  memset(c, 0, sizeof *c);
  c->p = *p;
  c->transposed = transposed;
  c->tf32 = tf32;
  if (plan_build(op, h, c)) { plan_destroy(c); return NULL; }
  c->used = 1;
  plans_used++;
  return c;
}

static size_t align_floats(size_t f) { return (f + WS_ALIGN_FLOATS - 1) / WS_ALIGN_FLOATS * WS_ALIGN_FLOATS; }

/* floats holding n 2-byte elements, aligned */
static size_t half_floats(int64_t n) { return align_floats(((size_t)n + 1) / 2); }

/* the work buffer: [workspace][padded x (transposed, output_padding >= stride)], then [widened weight], or
** under autocast [narrowed input image][narrowed output image][narrowed filter] */
static size_t ws_floats_of(const conv_plan *c) { return align_floats((c->ws_bytes + sizeof(float) - 1) / sizeof(float)); }
static size_t work_floats_of(const conv_plan *c) {
  size_t tail = c->p.autocast != FDM_FLOAT32
    ? half_floats(c->in_elems) + half_floats(c->out_elems) + half_floats(c->w_floats) : (size_t)c->w_floats;
  return ws_floats_of(c) + align_floats((size_t)c->pad_floats) + tail;
}

/* autocast: where the narrowed operands and results of one cuDNN call live */
typedef struct { void *in, *out, *filt; } narrow_bufs;

/* the workspace, the float32 filter (widened into the work buffer when half) and, under autocast, the narrowed
** buffers (*nb; else NULL) */
static int plan_buffers(const char *op, const conv_plan *c, const fdm_kview *w, const fdm_kview *work,
                        void **ws, const float **wf, narrow_bufs *nb_store, const narrow_bufs **nb) {
  size_t wsf = ws_floats_of(c) + align_floats((size_t)c->pad_floats), need = work_floats_of(c);
  if (!work || (size_t)fdm_kview_numel(work) < need)
    return fdm_cuda_seterror("%s: work buffer of %lld floats, %zu needed (size it with the *_work kernel)", op,
                             work ? (long long)fdm_kview_numel(work) : 0LL, need);
  *ws = work->data;
  *wf = (const float *)w->data;
  *nb = NULL;
  if (c->p.autocast != FDM_FLOAT32) {   /* the filter is narrowed from w's own dtype by each call */
    float *base = (float *)work->data + wsf;
    nb_store->in = base;
    nb_store->out = base + half_floats(c->in_elems);
    nb_store->filt = base + half_floats(c->in_elems) + half_floats(c->out_elems);
    *nb = nb_store;
    return 0;
  }
  if (nn_is_half(w)) {
    float *dst = (float *)work->data + wsf;
    if (nn_widen_weights(op, w, 0, c->w_floats, dst)) return -1;
    *wf = dst;
  }
  return 0;
}

/* The three cuDNN directions on the relation (in image, filter, out image): the forward computes out from in
** and the filter, backward-data in from out and the filter, backward-filter the filter from in and out. */
typedef enum { CONV_FORWARD, CONV_BACKWARD_DATA, CONV_BACKWARD_FILTER } conv_dir;

static cudnnStatus_t cudnn_dir(const conv_plan *c, conv_dir d, void *ws, const void *in, const void *filt,
                               const void *out, void *result) {
  const float one = 1.0f, nil = 0.0f;
  cudnnHandle_t h = fdm_cuda_cudnn();
  if (c->has_graph[d]) {   /* the graph-API plan; misaligned operands take the legacy algorithm */
    cudnnStatus_t s = cg_run(h, &c->graph[d], ws, d == CONV_BACKWARD_DATA ? result : in,
                             d == CONV_BACKWARD_FILTER ? result : filt, d == CONV_FORWARD ? result : out);
    if (s != CUDNN_STATUS_NOT_SUPPORTED) return s;
  }
  switch (d) {
    case CONV_FORWARD:
      return cudnnConvolutionForward(h, &one, c->in, in, c->filt, filt, c->conv, c->fwd, ws, c->ws_bytes, &nil,
                                     c->out, result);
    case CONV_BACKWARD_DATA:
      return cudnnConvolutionBackwardData(h, &one, c->filt, filt, c->out, out, c->conv, c->bwd_data, ws,
                                          c->ws_bytes, &nil, c->in, result);
    default:
      return cudnnConvolutionBackwardFilter(h, &one, c->in, in, c->out, out, c->conv, c->bwd_filter, ws,
                                            c->ws_bytes, &nil, c->filt, result);
  }
}

/* direction d with float32 operands and result (in, the filter w / its float32 data wf, out, the filter
** gradient gw: the result is out, in or gw). Under autocast (nb) the two operands are narrowed into nb first and
** the result widened from it. */
static int run_dir(const char *op, const conv_plan *c, conv_dir d, void *ws, const narrow_bufs *nb, float *in,
                   const fdm_kview *w, const float *wf, float *out, float *gw) {
  static const char *const what[] = {"cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                                     "cudnnConvolutionBackwardFilter"};
  cudnnStatus_t st;
  if (!nb) {
    st = cudnn_dir(c, d, ws, in, wf, out, d == CONV_FORWARD ? (void *)out : d == CONV_BACKWARD_DATA ? (void *)in : gw);
  } else {
    fdm_dtype to = c->p.autocast;
    /* a filter stored in the autocast dtype already (fp16 weights under fp16), aligned as the work buffer, is
    ** read in place */
    const void *filt = d != CONV_BACKWARD_FILTER && w->dtype == to && (uintptr_t)w->data % 16 == 0 ? w->data : nb->filt;
    if ((d != CONV_BACKWARD_DATA && cuda_autocast_convert(op, in, FDM_FLOAT32, c->in_elems, nb->in, to)) ||
        (d != CONV_BACKWARD_FILTER && filt == nb->filt &&
         cuda_autocast_convert(op, w->data, w->dtype, c->w_floats, nb->filt, to)) ||
        (d != CONV_FORWARD && cuda_autocast_convert(op, out, FDM_FLOAT32, c->out_elems, nb->out, to)))
      return -1;
    void *res = d == CONV_FORWARD ? nb->out : d == CONV_BACKWARD_DATA ? nb->in : nb->filt;
    st = cudnn_dir(c, d, ws, nb->in, filt, nb->out, res);
    if (st == CUDNN_STATUS_SUCCESS) {
      if (d == CONV_FORWARD) return cuda_autocast_convert(op, res, to, c->out_elems, out, FDM_FLOAT32);
      if (d == CONV_BACKWARD_DATA) return cuda_autocast_convert(op, res, to, c->in_elems, in, FDM_FLOAT32);
      return cuda_autocast_convert(op, res, to, c->w_floats, gw, FDM_FLOAT32);
    }
  }
  if (st != CUDNN_STATUS_SUCCESS) return fdm_cuda_seterror("%s: %s failed: %s", op, what[d], cudnnGetErrorString(st));
  return 0;
}

/* dst [P, hr, wr] = src [P, h, w] in the top-left corner, zeros elsewhere */
static __global__ void pad_planes(const float *src, int64_t P, int h, int w, float *dst, int hr, int wr) {
  NN_FOR(i, P * hr * wr) {
    int64_t pl = i / ((int64_t)hr * wr);
    int r = (int)(i - pl * hr * wr), y = r / wr, x = r - y * wr;
    dst[i] = (y < h && x < w) ? src[(pl * h + y) * w + x] : 0.0f;
  }
}
/* dst [P, h, w] = the top-left corner of src [P, hr, wr] */
static __global__ void crop_planes(const float *src, int64_t P, int hr, int wr, float *dst, int h, int w) {
  NN_FOR(i, P * h * w) {
    int64_t pl = i / ((int64_t)h * w);
    int r = (int)(i - pl * h * w), y = r / w, x = r - y * w;
    dst[i] = src[(pl * hr + y) * wr + x];
  }
}

/* the relation's output image for x [N, C, H, W] of a transposed conv: x itself, or x zero-padded into the
** work buffer */
static float *padded_x(const char *op, const conv_plan *c, const fdm_kview *x, const fdm_kview *work, int copy) {
  if (!c->pad_floats) return (float *)x->data;
  float *pad = (float *)work->data + ws_floats_of(c);
  if (copy) {
    int64_t P = (int64_t)c->p.N * c->p.C;
    pad_planes<<<nn_blocks(c->pad_floats), NN_THREADS, 0, fdm_cuda_stream()>>>((const float *)x->data, P, c->p.H,
                                                                              c->p.W, pad, c->hr, c->wr);
    if (cudaGetLastError() != cudaSuccess) { fdm_cuda_seterror("%s: padding the input failed", op); return NULL; }
  }
  return pad;
}

/* y [N, K, S] += b[k]: one block per row (n, k) for rows of >= 32 elements, else flat */
static __global__ void conv_bias_add(float *y, const float *b, int64_t n, int64_t S, int K) {
  NN_FOR(i, n) y[i] += b[(i / S) % K];
}
static __global__ void conv_bias_add_rows(float *y, const float *b, int64_t S, int K) {
  int64_t row = blockIdx.x;
  float v = b[row % K];
  float *yr = y + row * S;
  for (int64_t s = threadIdx.x; s < S; s += blockDim.x) yr[s] += v;
}
/* y [N, K, S] = b[k] (an empty reduction: no input channels) */
static __global__ void conv_bias_fill(float *y, const float *b, int64_t n, int64_t S, int K) {
  NN_FOR(i, n) y[i] = b ? b[(i / S) % K] : 0.0f;
}
/* gb[k] = sum over n and s of gy [N, K, S] in double: partial sums of
** (channel, split) blocks into the plugin's scratch, then one thread per channel */
#define BIAS_SPLIT_MIN 8192
#define BIAS_MAX_SPLITS 32
static __global__ void conv_bias_partial(const float *gy, int K, int64_t S, int64_t tot, int splits, double *part) {
  __shared__ double sh[64];
  int k = blockIdx.x, j = blockIdx.y;
  int64_t chunk = (tot + splits - 1) / splits, lo = (int64_t)j * chunk, hi = lo + chunk < tot ? lo + chunk : tot;
  double s = 0.0, unused = 0.0;
  int64_t i = lo + threadIdx.x, n = i / S, r = i - n * S;   /* (n, r) of i, advanced without division */
  for (; i < hi; i += blockDim.x) {
    s += gy[(n * K + k) * S + r];
    r += blockDim.x;
    while (r >= S) { r -= S; n++; }
  }
  nn_block_sum2(s, unused, sh);
  if (threadIdx.x == 0) part[(int64_t)k * splits + j] = s;
}
static __global__ void conv_bias_finalize(const double *part, int K, int splits, float *gb) {
  int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= K) return;
  double s = 0.0;
  for (int j = 0; j < splits; j++) s += part[(int64_t)k * splits + j];
  gb[k] = (float)s;
}

static int bias_add(const char *op, const fdm_conv_params *p, const fdm_kview *b, float *y, int K, int64_t S) {
  int64_t n = (int64_t)p->N * K * S;
  if (!b || !n) return 0;
  if (S >= 32 && n / S <= 0x7fffffffLL)
    conv_bias_add_rows<<<(unsigned)(n / S), S >= 512 ? 256 : 128, 0, fdm_cuda_stream()>>>(y, nn_f(b), S, K);
  else
    conv_bias_add<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(y, nn_f(b), n, S, K);
  NN_LAUNCHED(op);
  return 0;
}

static int bias_grad(const char *op, const fdm_conv_params *p, const float *gy, float *gb, int K, int64_t S) {
  if (!gb || K <= 0) return 0;
  cudaStream_t st = fdm_cuda_stream();
  int64_t tot = (int64_t)(p->N > 0 ? p->N : 0) * S;
  int64_t splits = tot / BIAS_SPLIT_MIN;
  if (splits < 1) splits = 1;
  if (splits > BIAS_MAX_SPLITS) splits = BIAS_MAX_SPLITS;
  double *part = (double *)fdm_cuda_scratch((size_t)K * splits * sizeof(double));
  if (!part) return -1;
  dim3 grid(K, (unsigned)splits);
  conv_bias_partial<<<grid, NN_THREADS, 0, st>>>(gy, K, S, tot, (int)splits, part);
  NN_LAUNCHED(op);
  conv_bias_finalize<<<(K + 255) / 256, 256, 0, st>>>(part, K, (int)splits, gb);
  NN_LAUNCHED(op);
  return 0;
}

static int zero(const char *op, float *p, int64_t n) {
  if (p && n > 0) NN_CUDA(op, cudaMemsetAsync(p, 0, (size_t)n * sizeof(float), fdm_cuda_stream()));
  return 0;
}

/* no cuDNN call for an empty batch or channel count (cuDNN rejects zero dims) */
static int degenerate(const fdm_conv_params *p) { return p->N <= 0 || p->C <= 0 || p->K <= 0; }

static int conv_work(const char *op, const fdm_conv_params *p, int transposed, size_t *floats) {
  if (degenerate(p)) { *floats = 0; return 0; }
  const conv_plan *c = plan_get(op, p, transposed);
  if (!c) return -1;
  *floats = work_floats_of(c);
  return 0;
}

extern "C" int cuda_kernel_conv2d_work(const fdm_conv_params *p, size_t *floats) {
  return conv_work("conv2d", p, 0, floats);
}

extern "C" int cuda_kernel_conv_transpose2d_work(const fdm_conv_params *p, size_t *floats) {
  return conv_work("conv_transpose2d", p, 1, floats);
}

extern "C" int cuda_kernel_conv2d_forward(const fdm_conv_params *p, const fdm_kview *x, const fdm_kview *w,
                                          const fdm_kview *b, const fdm_kview *y, const fdm_kview *work) {
  const char *op = "conv2d";
  int64_t S = (int64_t)p->OH * p->OW;
  if (degenerate(p)) {
    int64_t n = (int64_t)p->N * p->K * S;
    if (n > 0) {
      conv_bias_fill<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(nn_f(y), nn_f(b), n, S, p->K);
      NN_LAUNCHED(op);
    }
    return 0;
  }
  const conv_plan *c = plan_get(op, p, 0);
  void *ws;
  const float *wf;
  narrow_bufs nbs;
  const narrow_bufs *nb;
  if (!c || plan_buffers(op, c, w, work, &ws, &wf, &nbs, &nb) ||
      run_dir(op, c, CONV_FORWARD, ws, nb, nn_f(x), w, wf, nn_f(y), NULL))
    return -1;
  return bias_add(op, p, b, nn_f(y), p->K, S);
}

extern "C" int cuda_kernel_conv2d_backward(const fdm_conv_params *p, const fdm_kview *x, const fdm_kview *w,
                                           const fdm_kview *gy, const fdm_kview *gx, const fdm_kview *gw,
                                           const fdm_kview *gb, const fdm_kview *work) {
  const char *op = "conv2d";
  int64_t S = (int64_t)p->OH * p->OW;
  if (bias_grad(op, p, nn_f(gy), nn_f(gb), p->K, S)) return -1;
  if (degenerate(p)) {
    int G = p->groups > 0 ? p->groups : 1;
    if (zero(op, nn_f(gx), (int64_t)p->N * p->C * p->H * p->W) ||
        zero(op, nn_f(gw), (int64_t)p->K * (p->C / G) * p->kh * p->kw))
      return -1;
    return 0;
  }
  if (!gx && !gw) return 0;
  const conv_plan *c = plan_get(op, p, 0);
  void *ws;
  const float *wf;
  narrow_bufs nbs;
  const narrow_bufs *nb;
  if (!c || plan_buffers(op, c, w, work, &ws, &wf, &nbs, &nb)) return -1;
  if (gx && run_dir(op, c, CONV_BACKWARD_DATA, ws, nb, nn_f(gx), w, wf, nn_f(gy), NULL)) return -1;
  if (gw && run_dir(op, c, CONV_BACKWARD_FILTER, ws, nb, nn_f(x), w, wf, nn_f(gy), nn_f(gw))) return -1;
  return 0;
}

extern "C" int cuda_kernel_conv_transpose2d_forward(const fdm_conv_params *p, const fdm_kview *x,
                                                    const fdm_kview *w, const fdm_kview *b, const fdm_kview *y,
                                                    const fdm_kview *work) {
  const char *op = "conv_transpose2d";
  int64_t S = (int64_t)p->OH * p->OW;
  if (degenerate(p)) {
    int64_t n = (int64_t)p->N * p->K * S;
    if (n > 0) {
      conv_bias_fill<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(nn_f(y), nn_f(b), n, S, p->K);
      NN_LAUNCHED(op);
    }
    return 0;
  }
  const conv_plan *c = plan_get(op, p, 1);
  void *ws;
  const float *wf;
  narrow_bufs nbs;
  const narrow_bufs *nb;
  if (!c || plan_buffers(op, c, w, work, &ws, &wf, &nbs, &nb)) return -1;
  /* y (the relation's input image) = backward-data of x (its output image) */
  const float *px = padded_x(op, c, x, work, 1);
  if (!px || run_dir(op, c, CONV_BACKWARD_DATA, ws, nb, nn_f(y), w, wf, (float *)px, NULL)) return -1;
  return bias_add(op, p, b, nn_f(y), p->K, S);
}

extern "C" int cuda_kernel_conv_transpose2d_backward(const fdm_conv_params *p, const fdm_kview *x,
                                                     const fdm_kview *w, const fdm_kview *gy, const fdm_kview *gx,
                                                     const fdm_kview *gw, const fdm_kview *gb,
                                                     const fdm_kview *work) {
  const char *op = "conv_transpose2d";
  int64_t S = (int64_t)p->OH * p->OW;
  if (bias_grad(op, p, nn_f(gy), nn_f(gb), p->K, S)) return -1;
  if (degenerate(p)) {
    int G = p->groups > 0 ? p->groups : 1;
    if (zero(op, nn_f(gx), (int64_t)p->N * p->C * p->H * p->W) ||
        zero(op, nn_f(gw), (int64_t)p->C * (p->K / G) * p->kh * p->kw))
      return -1;
    return 0;
  }
  if (!gx && !gw) return 0;
  const conv_plan *c = plan_get(op, p, 1);
  void *ws;
  const float *wf;
  narrow_bufs nbs;
  const narrow_bufs *nb;
  if (!c || plan_buffers(op, c, w, work, &ws, &wf, &nbs, &nb)) return -1;
  /* gw: backward-filter with gy as the input image and x as the output gradient */
  if (gw) {
    const float *px = padded_x(op, c, x, work, 1);
    if (!px || run_dir(op, c, CONV_BACKWARD_FILTER, ws, nb, nn_f(gy), w, wf, (float *)px, nn_f(gw))) return -1;
  }
  /* gx (the relation's output image) = conv2d forward of gy (cropped from the padded size) */
  if (gx) {
    float *dst = c->pad_floats ? padded_x(op, c, x, work, 0) : (float *)gx->data;
    if (run_dir(op, c, CONV_FORWARD, ws, nb, nn_f(gy), w, wf, dst, NULL)) return -1;
    if (c->pad_floats) {
      int64_t P = (int64_t)p->N * p->C, n = P * p->H * p->W;
      crop_planes<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(dst, P, c->hr, c->wr, nn_f(gx), p->H, p->W);
      NN_LAUNCHED(op);
    }
  }
  return 0;
}
