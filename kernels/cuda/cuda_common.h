/*
** cuda_common.h: the services of the CUDA plugin (kernels/cuda/cuda_backend.cu)
** that every kernel file of kernels/cuda uses. C linkage, so any .cu file can
** declare or define against them.
**
** Rules for kernels (beyond fdm_kernels.h's): every launch goes on
** fdm_cuda_stream() (the cuBLAS and cuDNN handles are bound to it); all
** memory a kernel needs comes from the plugin's caching allocator (so device
** memory pressure is handled in one place): fdm_cuda_scratch_alloc() /
** fdm_cuda_scratch_release() around the work (release right after queueing
** it: the one stream orders the block's reuse, no synchronisation needed), or
** fdm_cuda_scratch(), one grow-only buffer owned by the plugin; pointers in a
** slot's parameter structs and blur's wx/wy are host memory, every
** fdm_kview's data pointer is device memory. Errors: return
** fdm_cuda_seterror(...) (-1), which sets the host's fdm_lasterror().
*/
#ifndef FDM_CUDA_COMMON_H
#define FDM_CUDA_COMMON_H
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <cudnn.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {
#include "fdm_device.h"

cudaStream_t fdm_cuda_stream(void);            /* the one stream every kernel runs on */
cublasHandle_t fdm_cuda_cublas(void);          /* bound to the stream; TF32 per FDM_TF32 */
cudnnHandle_t fdm_cuda_cudnn(void);            /* bound to the stream */
/* 1 when FDM_TF32=1 (or fdm.set_tf32(true), which sets it) allows TF32
** tensor cores; read at every call */
int fdm_cuda_tf32(void);
/* sets the cuBLAS handle's math mode from fdm_cuda_tf32() (cheap when unchanged) */
void fdm_cuda_cublas_math(void);
int fdm_cuda_sm_count(void);                   /* multiprocessors of the device */
/* sets the host's error message (fdm_lasterror) and returns -1 */
int fdm_cuda_seterror(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 0 when e == cudaSuccess, else -1 with "<what>: CUDA error N (text)" */
int fdm_cuda_check(cudaError_t e, const char *what);
/* after a launch: the launch error, if any (cudaGetLastError) */
int fdm_cuda_launched(const char *what);
int fdm_cuda_cublas_check(cublasStatus_t s, const char *what);
int fdm_cuda_cudnn_check(cudnnStatus_t s, const char *what);
/* a block of device memory from the caching allocator (its out-of-memory
** handling included); NULL with the error set ("<what>: scratch memory: ...") */
void *fdm_cuda_scratch_alloc(size_t nbytes, const char *what);
void fdm_cuda_scratch_release(void *p, size_t nbytes);
/* the plugin's grow-only scratch buffer of at least nbytes, valid for work
** queued on the stream until the next fdm_cuda_scratch call; NULL with the
** error set when memory runs out */
void *fdm_cuda_scratch(size_t nbytes);
/* copies that wait for the stream: device -> host and host -> device
** (refused while a graph is being captured) */
int fdm_cuda_to_host(void *host, const void *dev, size_t nbytes);
int fdm_cuda_to_device(void *dev, const void *host, size_t nbytes);

/* graphs (cuda_graph.cu) and their memory (the allocator, cuda_backend.cu) */
typedef struct fdm_cuda_pool fdm_cuda_pool;
fdm_cuda_pool *fdm_cuda_pool_new(void);
/* routes every allocation and release to pool (NULL: back to the shared cache) */
void fdm_cuda_pool_capture(fdm_cuda_pool *pool);
/* 1 while a graph is being captured: kernels must not copy host memory then */
int fdm_cuda_capturing(void);
/* the pool's graph is freed and its work done: the blocks return to the shared cache */
void fdm_cuda_pool_drop(fdm_cuda_pool *pool);
void *fdm_cuda_graph_begin(void);
int fdm_cuda_graph_end(void *graph);
int fdm_cuda_graph_replay(void *graph);
void fdm_cuda_graph_free(void *graph);
}
#endif
