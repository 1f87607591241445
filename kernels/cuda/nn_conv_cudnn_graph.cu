/*
** nn_conv_cudnn_graph.cu: a convolution direction as a cuDNN graph-API
** execution plan (nn_conv_cudnn_graph.cuh). One operation per graph (the
** forward, backward-data or backward-filter node) on float32 NCHW tensors
** with float32 compute; tensors are declared 16-byte aligned, and cg_run
** refuses (CUDNN_STATUS_NOT_SUPPORTED, the caller then runs the legacy
** algorithm) pointers that are not. Engines come from the heuristics (mode A,
** then fallback); without TF32 those with a tensor-core or down-converting
** numerical note are skipped, as nn_conv_cudnn.cu skips non-FMA algorithms.
** The plan's and operation graph's handle attributes are deprecated in cuDNN
** 9 in favour of device-property descriptors but still honoured; they keep
** this file working from cuDNN 8.x on.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <cuda_runtime.h>
#include "nn_conv_cudnn_graph.cuh"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define UID_IN 1
#define UID_FILT 2
#define UID_OUT 3
#define MAX_CONFIGS 24   /* engine configs tried per heuristics mode */
#define ALIGN 16

int cg_enabled(void) {
  static int on = -1;
  if (on < 0) {
    const char *e = getenv("FDM_CUDNN_API");
    on = e && strcmp(e, "graph") == 0;
  }
  return on;
}

/* the status of a call, or jumps to fail with why set */
#define CG(call)                                                                   \
  do {                                                                             \
    cudnnStatus_t s_ = (call);                                                     \
    if (s_ != CUDNN_STATUS_SUCCESS) {                                              \
      snprintf(why, why_len, "%s: %s", #call, cudnnGetErrorString(s_));            \
      rc = -1;                                                                     \
      goto fail;                                                                   \
    }                                                                              \
  } while (0)

/* a [d0, d1, d2, d3] float32 tensor, NCHW or (nhwc) channels last */
static cudnnStatus_t make_tensor(int64_t uid, int64_t d0, int64_t d1, int64_t d2, int64_t d3, int nhwc,
                                 cudnnBackendDescriptor_t *t) {
  int64_t dims[4] = {d0, d1, d2, d3}, align = ALIGN;
  int64_t strides[4] = {d1 * d2 * d3, d2 * d3, d3, 1};
  if (nhwc) { strides[1] = 1; strides[2] = d3 * d1; strides[3] = d1; }
  cudnnDataType_t f = CUDNN_DATA_FLOAT;
  cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, t);
  if (!s) s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f);
  if (!s) s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
  if (!s) s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
  if (!s) s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
  if (!s) s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
  if (!s) s = cudnnBackendFinalize(*t);
  return s;
}

/* the engine of a config: its global index and whether its numerical notes allow strict float32 */
static void engine_of(cudnnBackendDescriptor_t cfg, int64_t *gidx, int *strict_fp32) {
  cudnnBackendDescriptor_t eng;
  int64_t n = 0;
  *gidx = -1;
  *strict_fp32 = 1;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng)) return;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &eng) ==
      CUDNN_STATUS_SUCCESS) {
    cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, gidx);
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    int64_t nn = 0;
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                 CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &nn, notes) == CUDNN_STATUS_SUCCESS)
      for (int64_t k = 0; k < nn; k++)
        if (notes[k] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE || notes[k] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS)
          *strict_fp32 = 0;
  }
  cudnnBackendDestroyDescriptor(eng);
}

static int aligned(const void *p) { return ((uintptr_t)p % ALIGN) == 0; }

cudnnStatus_t cg_run(cudnnHandle_t h, const cg_plan *p, void *ws, const void *in, const void *filt,
                     const void *out) {
  if (!aligned(in) || !aligned(filt) || !aligned(out) || (p->ws_bytes && !aligned(ws)))
    return CUDNN_STATUS_NOT_SUPPORTED;
  void *ptrs[3] = {(void *)in, (void *)filt, (void *)out};
  int64_t uids[3] = {UID_IN, UID_FILT, UID_OUT};
  cudnnBackendDescriptor_t vp;
  cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
  if (s) return s;
  s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs);
  if (!s) s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
  if (!s) s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
  if (!s) s = cudnnBackendFinalize(vp);
  if (!s) s = cudnnBackendExecute(h, p->plan, vp);
  cudnnBackendDestroyDescriptor(vp);
  return s;
}

void cg_destroy(cg_plan *p) {
  if (p->plan) cudnnBackendDestroyDescriptor(p->plan);
  p->plan = NULL;
}

/* median of 3 runs after one untimed, in ms; < 0 when a run fails */
static float time_plan(cudnnHandle_t h, const cg_plan *p, void *ws, void *in, void *filt, void *out) {
  cudaStream_t st;
  if (cudnnGetStream(h, &st)) return -1;
  cudaEvent_t a, b;
  if (cudaEventCreate(&a) != cudaSuccess) return -1;
  if (cudaEventCreate(&b) != cudaSuccess) { cudaEventDestroy(a); return -1; }
  float ms[3] = {-1, -1, -1};
  int ok = cg_run(h, p, ws, in, filt, out) == CUDNN_STATUS_SUCCESS;
  for (int i = 0; ok && i < 3; i++) {
    cudaEventRecord(a, st);
    ok = cg_run(h, p, ws, in, filt, out) == CUDNN_STATUS_SUCCESS;
    cudaEventRecord(b, st);
    ok = ok && cudaEventSynchronize(b) == cudaSuccess && cudaEventElapsedTime(&ms[i], a, b) == cudaSuccess;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  (void)cudaGetLastError();
  if (!ok) return -1;
  std::sort(ms, ms + 3);
  return ms[1];
}

int cg_build(cudnnHandle_t h, const cg_geom *g, int dir, int tf32, size_t ws_limit, int timed, float beat_ms,
             cg_plan *out, char *why, size_t why_len) {
  cudnnBackendDescriptor_t tin = NULL, tfilt = NULL, tout = NULL, conv = NULL, op = NULL, graph = NULL;
  void *bin = NULL, *bfilt = NULL, *bout = NULL, *bws = NULL;
  int found = 0, rc = 1;
  cg_plan best = {NULL, -1, 0, -1};
  why[0] = 0;
  {
    CG(make_tensor(UID_IN, g->n, g->ci, g->hi, g->wi, g->nhwc, &tin));
    CG(make_tensor(UID_FILT, g->co, g->ci / g->g, g->kh, g->kw, g->nhwc, &tfilt));
    CG(make_tensor(UID_OUT, g->n, g->co, g->ho, g->wo, g->nhwc, &tout));
    int64_t dims = 2, pad[2] = {g->ph, g->pw}, str[2] = {g->sh, g->sw}, dil[2] = {g->dh, g->dw};
    cudnnDataType_t f = CUDNN_DATA_FLOAT;
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    CG(cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &conv));
    CG(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims));
    CG(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f));
    CG(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
    CG(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
    CG(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
    CG(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil));
    CG(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, str));
    CG(cudnnBackendFinalize(conv));

    float alpha = 1.0f, beta = 0.0f;
    const cudnnBackendDescriptorType_t kinds[3] = {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
                                                   CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                                                   CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR};
    /* per direction: the in, filter and out attributes, then conv, alpha, beta */
    const cudnnBackendAttributeName_t attrs[3][6] = {
        {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA}};
    CG(cudnnBackendCreateDescriptor(kinds[dir], &op));
    CG(cudnnBackendSetAttribute(op, attrs[dir][0], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tin));
    CG(cudnnBackendSetAttribute(op, attrs[dir][1], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tfilt));
    CG(cudnnBackendSetAttribute(op, attrs[dir][2], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tout));
    CG(cudnnBackendSetAttribute(op, attrs[dir][3], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv));
    CG(cudnnBackendSetAttribute(op, attrs[dir][4], CUDNN_TYPE_FLOAT, 1, &alpha));
    CG(cudnnBackendSetAttribute(op, attrs[dir][5], CUDNN_TYPE_FLOAT, 1, &beta));
    CG(cudnnBackendFinalize(op));
    CG(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph));
    CG(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op));
    CG(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h));
    CG(cudnnBackendFinalize(graph));

    /* scratch operands for timing (values do not matter); none: the first usable config */
    if (timed) {
      size_t nin = (size_t)(g->n * g->ci * g->hi * g->wi) * 4, nf = (size_t)(g->co * (g->ci / g->g) * g->kh * g->kw) * 4;
      size_t nout = (size_t)(g->n * g->co * g->ho * g->wo) * 4;
      if (cudaMalloc(&bin, nin) != cudaSuccess || cudaMalloc(&bfilt, nf) != cudaSuccess ||
          cudaMalloc(&bout, nout) != cudaSuccess || cudaMemset(bin, 0, nin) != cudaSuccess ||
          cudaMemset(bfilt, 0, nf) != cudaSuccess || cudaMemset(bout, 0, nout) != cudaSuccess)
        timed = 0;
      (void)cudaGetLastError();
    }
    int64_t seen[2 * MAX_CONFIGS];
    int nseen = 0;
    const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    for (int m = 0; m < 2 && !(found && !timed); m++) {
      cudnnBackendDescriptor_t heur = NULL, cfgs[MAX_CONFIGS];
      int64_t count = 0, got = 0;
      int ncfg = 0;
      if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur)) continue;
      cudnnBackendHeurMode_t hm = modes[m];
      if (cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                   &graph) ||
          cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &hm) ||
          cudnnBackendFinalize(heur) ||
          cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                   NULL)) {
        cudnnBackendDestroyDescriptor(heur);
        continue;
      }
      if (count > MAX_CONFIGS) count = MAX_CONFIGS;
      for (; ncfg < count; ncfg++)
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[ncfg])) break;
      if (ncfg > 0 && cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                               ncfg, &got, cfgs) != CUDNN_STATUS_SUCCESS)
        got = 0;
      for (int64_t i = 0; i < got && !(found && !timed); i++) {
        int64_t gidx;
        int strict;
        engine_of(cfgs[i], &gidx, &strict);
        if (!tf32 && !strict) continue;
        int dup = 0;
        for (int k = 0; k < nseen; k++) dup |= seen[k] == gidx;
        if (dup) continue;
        if (nseen < 2 * MAX_CONFIGS) seen[nseen++] = gidx;
        cg_plan cand = {NULL, gidx, 0, -1};
        int64_t ws = 0, nw = 0;
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &cand.plan)) continue;
        if (cudnnBackendSetAttribute(cand.plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h) ||
            cudnnBackendSetAttribute(cand.plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]) ||
            cudnnBackendFinalize(cand.plan) ||
            cudnnBackendGetAttribute(cand.plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &nw,
                                     &ws) ||
            ws < 0 || (size_t)ws > ws_limit) {
          cg_destroy(&cand);
          continue;
        }
        cand.ws_bytes = (size_t)ws;
        if (timed) {
          if (ws > 0) {   /* a workspace of this plan's size for its timing */
            if (bws) cudaFree(bws);
            bws = NULL;
            if (cudaMalloc(&bws, (size_t)ws) != cudaSuccess) { (void)cudaGetLastError(); cg_destroy(&cand); continue; }
          }
          cand.ms = time_plan(h, &cand, bws, bin, bfilt, bout);
          if (cand.ms < 0 || (found && cand.ms >= best.ms)) { cg_destroy(&cand); continue; }
        }
        if (found) cg_destroy(&best);
        best = cand;
        found = 1;
      }
      for (int k = 0; k < ncfg; k++) cudnnBackendDestroyDescriptor(cfgs[k]);
      cudnnBackendDestroyDescriptor(heur);
    }
    if (found && timed && beat_ms >= 0 && best.ms >= beat_ms) {
      snprintf(why, why_len, "graph engine %lld %.3f ms, legacy %.3f ms", (long long)best.engine, best.ms, beat_ms);
      cg_destroy(&best);
      found = 0;
    }
    if (found) {
      *out = best;
      rc = 0;
    } else if (!why[0]) {
      snprintf(why, why_len, "no engine config within the workspace limit%s", tf32 ? "" : " without tensor cores");
    }
  }
fail:
  if (bin) cudaFree(bin);
  if (bfilt) cudaFree(bfilt);
  if (bout) cudaFree(bout);
  if (bws) cudaFree(bws);
  (void)cudaGetLastError();
  if (graph) cudnnBackendDestroyDescriptor(graph);
  if (op) cudnnBackendDestroyDescriptor(op);
  if (conv) cudnnBackendDestroyDescriptor(conv);
  if (tin) cudnnBackendDestroyDescriptor(tin);
  if (tfilt) cudnnBackendDestroyDescriptor(tfilt);
  if (tout) cudnnBackendDestroyDescriptor(tout);
  return rc;
}
