/*
** nn_blur.cu: torchvision's separable gaussian blur of P planes with reflect
** padding (kernels/cpu/blur.c) and its adjoint. The slot's wx/wy are host
** arrays: they are copied into the plugin's scratch on the stream first.
** Forward: one thread per output, the horizontal sums of the ky source rows
** recomputed in place of the CPU's scratch plane (same order of sums).
** Backward: one thread per input element gathers the outputs that read it:
** an index i is read at the positions whose reflected tap is i, i.e. at
** i, -i and 2(n-1)-i before reflection (distinct ones only); the op
** guarantees radius < n, so one reflection is all there is.
*/
#include "nn_common.cuh"

static __device__ __forceinline__ int reflect(int i, int n) {
  if (i < 0) i = -i;
  if (i >= n) i = 2 * (n - 1) - i;
  return i;
}

static __global__ void blur_fwd(int64_t P, int H, int W, int kx, int ky, const float *wx, const float *wy,
                                const float *x, float *y) {
  int rx = kx / 2, ry = ky / 2;
  int64_t HW = (int64_t)H * W;
  NN_FOR(i, P * HW) {
    int64_t p = i / HW;
    int r = (int)(i - p * HW), h = r / W, w = r - h * W;
    const float *xp = x + p * HW;
    float s = 0.0f;
    for (int ty = 0; ty < ky; ty++) {
      const float *row = xp + (int64_t)reflect(h + ty - ry, H) * W;
      float t = 0.0f;
      for (int tx = 0; tx < kx; tx++) t += wx[tx] * row[reflect(w + tx - rx, W)];
      s += wy[ty] * t;
    }
    y[i] = s;
  }
}

/* the distinct unreflected positions c with reflect(c) == i: returns how many */
static __device__ __forceinline__ int preimages(int i, int n, int *c) {
  int k = 0;
  c[k++] = i;
  if (i > 0) c[k++] = -i;
  if (i < n - 1) c[k++] = 2 * (n - 1) - i;
  return k;
}

static __global__ void blur_bwd(int64_t P, int H, int W, int kx, int ky, const float *wx, const float *wy,
                                const float *gy, float *gx) {
  int rx = kx / 2, ry = ky / 2;
  int64_t HW = (int64_t)H * W;
  NN_FOR(i, P * HW) {
    int64_t p = i / HW;
    int r = (int)(i - p * HW), h = r / W, w = r - h * W;
    const float *gp = gy + p * HW;
    int ch[3], cw[3];
    int nh = preimages(h, H, ch), nw = preimages(w, W, cw);
    float s = 0.0f;
    for (int ty = 0; ty < ky; ty++)
      for (int a = 0; a < nh; a++) {
        int oh = ch[a] - ty + ry;                 /* output row whose tap ty lands on ch[a] */
        if (oh < 0 || oh >= H) continue;
        const float *row = gp + (int64_t)oh * W;
        float t = 0.0f;
        for (int tx = 0; tx < kx; tx++)
          for (int b = 0; b < nw; b++) {
            int ow = cw[b] - tx + rx;
            if (ow >= 0 && ow < W) t += wx[tx] * row[ow];
          }
        s += wy[ty] * t;
      }
    gx[i] = s;
  }
}

/* wx then wy in device memory (the plugin's scratch) */
static int upload_weights(const char *op, const fdm_blur_params *p, const float *wx, const float *wy, float **dw) {
  size_t n = (size_t)p->kx + (size_t)p->ky;
  /* a captured copy would read the host weights again at every replay, after they are freed */
  if (fdm_cuda_capturing())
    return fdm_cuda_seterror("%s: cannot be captured in a CUDA graph (its weights come from host memory)", op);
  float *d = (float *)fdm_cuda_scratch(n * sizeof(float));
  if (!d) return -1;
  cudaStream_t st = fdm_cuda_stream();
  NN_CUDA(op, cudaMemcpyAsync(d, wx, (size_t)p->kx * sizeof(float), cudaMemcpyHostToDevice, st));
  NN_CUDA(op, cudaMemcpyAsync(d + p->kx, wy, (size_t)p->ky * sizeof(float), cudaMemcpyHostToDevice, st));
  *dw = d;
  return 0;
}

extern "C" int cuda_kernel_blur_forward(const fdm_blur_params *p, const float *wx, const float *wy,
                                        const fdm_kview *x, const fdm_kview *y) {
  const char *op = "gaussian_blur";
  int64_t n = p->P * p->H * p->W;
  if (n <= 0) return 0;
  float *dw;
  if (upload_weights(op, p, wx, wy, &dw)) return -1;
  blur_fwd<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(p->P, p->H, p->W, p->kx, p->ky, dw, dw + p->kx,
                                                                nn_f(x), nn_f(y));
  NN_LAUNCHED(op);
  return 0;
}

extern "C" int cuda_kernel_blur_backward(const fdm_blur_params *p, const float *wx, const float *wy,
                                         const fdm_kview *gy, const fdm_kview *gx) {
  const char *op = "gaussian_blur";
  int64_t n = p->P * p->H * p->W;
  if (n <= 0) return 0;
  float *dw;
  if (upload_weights(op, p, wx, wy, &dw)) return -1;
  blur_bwd<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(p->P, p->H, p->W, p->kx, p->ky, dw, dw + p->kx,
                                                                nn_f(gy), nn_f(gx));
  NN_LAUNCHED(op);
  return 0;
}
