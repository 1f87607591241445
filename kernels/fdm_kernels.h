/*
** fdm_kernels.h: the kernel table every device fills in (THNN-style). A
** kernel is a plain function: it takes every buffer from the caller as an
** fdm_kview (device data pointer, dtype, shape, strides) or a raw parameter
** struct, knows nothing of Lua, references or autograd, allocates nothing
** but what it frees before returning, and returns 0, or -1 with
** fdm_seterror() set. A NULL entry means "not on this device": ops then fail
** with an error naming the op and the device (fdm_kernel_missing).
**
** The list is an X-macro, so the table, the names used in errors and
** fdm_backend_supports() come from one place. Core kernels are here; the
** neural-network kernels are in fdm_kernels_nn.h.
*/
#ifndef FDM_KERNELS_H
#define FDM_KERNELS_H
#include <stddef.h>
#include "fdm.h"

typedef enum {
  FDM_ADD, FDM_SUB, FDM_MUL, FDM_DIV, FDM_POW, FDM_MAXIMUM, FDM_MINIMUM,
  FDM_EQ, FDM_NE, FDM_LT, FDM_LE, FDM_GT, FDM_GE, FDM_AND, FDM_OR,
  FDM_NBINOP
} fdm_binop;

typedef enum {
  FDM_NEG, FDM_ABS, FDM_SQRT, FDM_RSQRT, FDM_EXP, FDM_LOG, FDM_SIN, FDM_COS,
  FDM_SQUARE, FDM_SIGN, FDM_RELU, FDM_SIGMOID, FDM_TANH, FDM_GELU,
  FDM_GELU_TANH, FDM_SILU, FDM_NOT, FDM_RECIPROCAL,
  FDM_NUNOP
} fdm_unop;

/* row reductions over x [outer, inner] (contiguous) into out [outer] */
typedef enum {
  FDM_ROWS_SUM,      /* float32 (double accumulation) or int64 (wrapping, as PyTorch) */
  FDM_ROWS_MEAN,     /* float32 */
  FDM_ROWS_VAR,      /* float32; aux = row means; param = correction */
  FDM_ROWS_MAX,      /* float32/int64 values, aux = int64 argmax (first; NaN wins) */
  FDM_ROWS_MIN,
  FDM_ROWS_ANY,      /* bool x, bool out */
  FDM_ROWS_ALL,
  /* float32 x: out/aux = int64 positions of the order statistics floor(q (n-1))
  ** and the next one (fparam = q); a row holding NaN gives a NaN's position */
  FDM_ROWS_QUANTILE
} fdm_rows_kind;

typedef enum { FDM_RANDOM_UNIFORM, FDM_RANDOM_NORMAL, FDM_RANDOM_INT } fdm_random_kind;

/* C[i] = alpha * op(A[i]) op(B[i]) + beta * C[i] for every batch index i,
** row-major float32 matrices (B may be float16/bfloat16: converted one matrix
** at a time). A and B address their batches through batch_shape and their own
** batch strides (0 where broadcast); C's batches are packed (ldc * M apart).
** autocast (FDM_BFLOAT16/FDM_FLOAT16; FDM_FLOAT32 = off, the zero value): the
** product of A and B rounded to that dtype (round to nearest even), float32
** accumulation and result (fdm.h: fdm_autocast_dtype). */
typedef struct {
  int64_t M, N, K;
  int trans_a, trans_b;
  int64_t lda, ldb, ldc;
  int batch_nd;
  int64_t batch_shape[FDM_MAXDIM], batch_stride_a[FDM_MAXDIM], batch_stride_b[FDM_MAXDIM];
  float alpha, beta;
  fdm_dtype autocast;
} fdm_gemm_params;

typedef struct {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;          /* the step number after this update (1 for the first) */
  int decoupled;         /* AdamW: decay the weights, not the gradient */
  int maximize;
} fdm_adam_params;

#define FDM_CORE_KERNELS(X)                                                                  \
  /* dst = src converted to dst's dtype; same shape (src may be a broadcast view) */         \
  X(copy, (const fdm_kview *dst, const fdm_kview *src))                                        \
  X(fill, (const fdm_kview *dst, double value))                                               \
  /* out = a op b; a and b of one dtype (float32 or int64), broadcast to out's shape */      \
  X(binary, (fdm_binop op, const fdm_kview *out, const fdm_kview *a, const fdm_kview *b))       \
  /* out = op(x), same shape, float32 (int64 for neg/abs/sign/square/relu/not) */            \
  X(unary, (fdm_unop op, const fdm_kview *out, const fdm_kview *x))                            \
  /* gx = g * op'(x) given x, y = op(x), all float32 contiguous, one shape */                \
  X(unary_backward, (fdm_unop op, const fdm_kview *gx, const fdm_kview *x, const fdm_kview *y,  \
                     const fdm_kview *g))                                                     \
  /* a += alpha * b, float32, b broadcast to a's shape */                                    \
  X(axpy, (const fdm_kview *a, const fdm_kview *b, double alpha))                              \
  X(clamp, (const fdm_kview *out, const fdm_kview *x, double lo, double hi, int has_lo,        \
            int has_hi))                                                                     \
  /* gx = g where lo <= x <= hi, else 0 */                                                   \
  X(clamp_backward, (const fdm_kview *gx, const fdm_kview *x, const fdm_kview *g, double lo,    \
                     double hi, int has_lo, int has_hi))                                     \
  /* out = cond ? a : b, cond bool, a/b of out's dtype, all broadcast to out */              \
  X(where, (const fdm_kview *out, const fdm_kview *cond, const fdm_kview *a, const fdm_kview *b)) \
  X(reduce_rows, (fdm_rows_kind kind, const fdm_kview *out, const fdm_kview *aux,              \
                  const fdm_kview *x, int64_t outer, int64_t inner, int64_t param,            \
                  double fparam))                                                            \
  /* torch.gather along dim (contiguous out/x/idx, idx values checked);                    \
  ** backward: gx (zeroed) += g at idx */                                                    \
  X(gather, (const fdm_kview *out, const fdm_kview *x, const fdm_kview *idx, int dim))       \
  X(gather_backward, (const fdm_kview *gx, const fdm_kview *idx, const fdm_kview *g, int dim)) \
  /* x's slices along dim picked by the 1-d idx into out (contiguous, any dtype, idx values   \
  ** checked); backward (float32): gx (zeroed) += g's slices at idx */                       \
  X(index_select, (const fdm_kview *out, const fdm_kview *x, const fdm_kview *idx, int dim)) \
  X(index_select_backward, (const fdm_kview *gx, const fdm_kview *idx, const fdm_kview *g,   \
                            int dim))                                                        \
  X(gemm, (const fdm_gemm_params *p, const fdm_kview *a, const fdm_kview *b,                  \
           const fdm_kview *c))                                                               \
  /* Philox4x32-10 draws: element i is a function of (seed, offset, i) only;                 \
  ** RANDOM_INT draws in [lo, hi) */                                                         \
  X(random, (fdm_random_kind kind, const fdm_kview *out, uint64_t seed, uint64_t offset,      \
             int64_t lo, int64_t hi))                                                        \
  X(randperm, (const fdm_kview *out, uint64_t seed, uint64_t offset))                         \
  /* out[i] = start + i * step (arange); linspace: the second half counted back from stop, \
  ** as PyTorch, so the last value is exactly stop */                                        \
  X(ramp, (const fdm_kview *out, double start, double step, double stop, int linspace))       \
  /* Adam/AdamW as torch.optim (1.13): p, m, v (and vmax when non-NULL) in place */          \
  X(adam, (const fdm_adam_params *a, const fdm_kview *p, const fdm_kview *g, const fdm_kview *m, \
           const fdm_kview *v, const fdm_kview *vmax))                                        \
  /* the same update for n parameters at once (multi-tensor: one pass, few launches); p, g, \
  ** m, v: arrays of n views; vmax NULL or n views; every element as the adam kernel */     \
  X(adam_multi, (const fdm_adam_params *a, int n, const fdm_kview *p, const fdm_kview *g,      \
                 const fdm_kview *m, const fdm_kview *v, const fdm_kview *vmax))              \
  /* Per-step values read from device memory (CUDA graphs: a replayed launch  \
  ** sees what the host or an earlier kernel wrote there, not its capture-time \
  ** arguments). counter (int64, one element) += delta */                                   \
  X(counter_add, (const fdm_kview *counter, int64_t delta))                                   \
  /* the random kernel with seed = state[0] and offset = state[1] + rel (state: int64 [2]) */ \
  X(random_at, (fdm_random_kind kind, const fdm_kview *out, const fdm_kview *state, uint64_t rel, \
                int64_t lo, int64_t hi))                                                      \
  /* adam_multi with the learning rate read from lr (float32, one element) and the step   \
  ** from step (int64, one element) instead of a->lr and a->step */                         \
  X(adam_multi_at, (const fdm_adam_params *a, const fdm_kview *lr, const fdm_kview *step, int n, \
                    const fdm_kview *p, const fdm_kview *g, const fdm_kview *m,                \
                    const fdm_kview *v, const fdm_kview *vmax))

#include "fdm_kernels_nn.h"

#define FDM_KERNEL_SLOT(name, params) int (*name) params;
typedef struct fdm_kernels {
  FDM_CORE_KERNELS(FDM_KERNEL_SLOT)
  FDM_NN_KERNELS(FDM_KERNEL_SLOT)
} fdm_kernels;
#undef FDM_KERNEL_SLOT

#define FDM_ALL_KERNELS(X) FDM_CORE_KERNELS(X) FDM_NN_KERNELS(X)
#endif
