/*
** cuda_graph.cu: CUDA graphs over the plugin's one stream. graph_begin
** starts capturing the stream (thread-local mode: only this thread's unsafe
** calls break the capture) and routes the allocator to the graph's pool;
** graph_end ends the capture and instantiates it; graph_replay launches it;
** graph_free destroys it and hands its pool back to the shared cache.
**
** A graph freed while another is being captured (Lua's collector may
** finalise one at any time) waits until that capture ends: destroying it
** means waiting for the stream, which a capture forbids.
*/
#include <vector>
#include "cuda_kernels.h"

struct cuda_graph {
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  fdm_cuda_pool *pool = NULL;
  int capturing = 0;
};

static cuda_graph *current;                 /* the graph being captured */
static std::vector<cuda_graph *> deferred;  /* freed during someone's capture */

static void destroy(cuda_graph *g) {
  /* its launches must be done before its pool's blocks are reused elsewhere */
  if (g->exec) cudaStreamSynchronize(fdm_cuda_stream());
  if (g->exec) cudaGraphExecDestroy(g->exec);
  if (g->graph) cudaGraphDestroy(g->graph);
  cudaGetLastError();
  fdm_cuda_pool_drop(g->pool);
  delete g;
}

static void stop_capture(cuda_graph *g) {
  fdm_cuda_pool_capture(NULL);
  g->capturing = 0;
  current = NULL;
}

static void free_deferred(void) {
  for (cuda_graph *g : deferred) destroy(g);
  deferred.clear();
}

extern "C" void *fdm_cuda_graph_begin(void) {
  if (current) {
    fdm_cuda_seterror("cuda graph: a graph is already being captured (captures do not nest)");
    return NULL;
  }
  cuda_graph *g = new cuda_graph();
  g->pool = fdm_cuda_pool_new();
  if (fdm_cuda_check(cudaStreamBeginCapture(fdm_cuda_stream(), cudaStreamCaptureModeThreadLocal),
                     "cuda graph: begin capture")) {
    fdm_cuda_pool_drop(g->pool);
    delete g;
    return NULL;
  }
  g->capturing = 1;
  current = g;
  fdm_cuda_pool_capture(g->pool);
  return g;
}

extern "C" int fdm_cuda_graph_end(void *h) {
  cuda_graph *g = (cuda_graph *)h;
  if (!g->capturing) return fdm_cuda_seterror("cuda graph: not being captured");
  stop_capture(g);
  cudaError_t e = cudaStreamEndCapture(fdm_cuda_stream(), &g->graph);
  free_deferred();
  if (e != cudaSuccess) {
    cudaGetLastError();
    g->graph = NULL;
    return fdm_cuda_seterror("cuda graph: the capture failed (CUDA error %d, %s): the captured function did "
                             "something that waits for the GPU (a synchronisation, a first cuDNN algorithm "
                             "search, a new cuBLAS setting); run it once without capture before capturing",
                             (int)e, cudaGetErrorString(e));
  }
  return fdm_cuda_check(cudaGraphInstantiate(&g->exec, g->graph, 0), "cuda graph: instantiate");
}

extern "C" int fdm_cuda_graph_replay(void *h) {
  cuda_graph *g = (cuda_graph *)h;
  if (!g->exec) return fdm_cuda_seterror("cuda graph: nothing to replay (the capture did not complete)");
  if (current) return fdm_cuda_seterror("cuda graph: cannot replay a graph while another is being captured");
  return fdm_cuda_check(cudaGraphLaunch(g->exec, fdm_cuda_stream()), "cuda graph: replay");
}

extern "C" void fdm_cuda_graph_free(void *h) {
  cuda_graph *g = (cuda_graph *)h;
  if (!g) return;
  if (g->capturing) {   /* a capture abandoned after an error: end it and drop what it recorded */
    stop_capture(g);
    cudaGraph_t partial = NULL;
    cudaStreamEndCapture(fdm_cuda_stream(), &partial);
    if (partial) cudaGraphDestroy(partial);
    cudaGetLastError();
    free_deferred();
  } else if (current) {
    deferred.push_back(g);
    return;
  }
  destroy(g);
}
