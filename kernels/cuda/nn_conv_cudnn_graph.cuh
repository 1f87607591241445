/*
** nn_conv_cudnn_graph.cuh: one convolution direction through cuDNN's graph
** (backend) API, for nn_conv_cudnn.cu when FDM_CUDNN_API=graph. The legacy
** API there keeps the descriptors, the autocast path and every direction the
** graph API cannot serve; this file only builds and runs execution plans.
*/
#ifndef NN_CONV_CUDNN_GRAPH_CUH
#define NN_CONV_CUDNN_GRAPH_CUH
#include <cudnn.h>
#include <stddef.h>
#include <stdint.h>

/* the conv2d relation of nn_conv_cudnn.cu: in image [n, ci, hi, wi], filter
** [co, ci/g, kh, kw], out image [n, co, ho, wo], all float32, laid out NCHW
** (fdm's tensors), or NHWC when nhwc (bench/cudnn_probe.cu's comparison) */
typedef struct {
  int64_t n, ci, hi, wi, co, ho, wo, g, kh, kw, ph, pw, sh, sw, dh, dw;
  int nhwc;
} cg_geom;

/* 0 forward (out from in), 1 backward data (in from out), 2 backward filter */
enum { CG_FORWARD, CG_BACKWARD_DATA, CG_BACKWARD_FILTER };

typedef struct cg_plan {
  cudnnBackendDescriptor_t plan;
  int64_t engine;     /* the engine's global index (FDM_CUDNN_LOG) */
  size_t ws_bytes;
  float ms;           /* its measured time when timed, else -1 */
} cg_plan;

/* whether FDM_CUDNN_API=graph asks for the graph API */
int cg_enabled(void);

/* Builds the plan of one direction: the heuristics' engine configs (mode A,
** then fallback) that finalize within ws_limit bytes of workspace, without
** tensor-core engines unless tf32; the first of them, or with timed the
** fastest (median of 3 on scratch buffers it allocates) if it beats beat_ms
** (the legacy algorithm's time; < 0: no bar). Returns 0 with *out set, 1 when
** no engine qualifies (the legacy algorithm stays), -1 on a cuDNN error (the
** legacy algorithm stays too; why holds the message). */
int cg_build(cudnnHandle_t h, const cg_geom *g, int dir, int tf32, size_t ws_limit, int timed, float beat_ms,
             cg_plan *out, char *why, size_t why_len);

/* runs the plan on in, filter, out (the direction's result among them) */
cudnnStatus_t cg_run(cudnnHandle_t h, const cg_plan *p, void *ws, const void *in, const void *filt, const void *out);

void cg_destroy(cg_plan *p);
#endif
