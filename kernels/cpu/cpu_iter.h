/*
** cpu_iter.h: strided loops over up to four views sharing one (broadcast)
** shape (views already carry the broadcast shape, with 0 strides). Dims that are contiguous for every operand are merged first, so the
** common cases become one long vectorisable inner loop; work is split over
** OpenMP threads by rows and by blocks of the inner dim.
*/
#ifndef CPU_ITER_H
#define CPU_ITER_H
#include "fdm.h"

#define ITER_MAXOP 4
typedef struct {
  int nd, nop;
  int64_t shape[FDM_MAXDIM];
  int64_t st[ITER_MAXOP][FDM_MAXDIM];
  int64_t numel;
} fdm_iter;

/* ops[0] gives the shape; every view has that shape (broadcast dims: stride 0) */
static inline void iter_init(fdm_iter *it, int nop, const fdm_kview *const *ops) {
  it->nop = nop; it->numel = 1;
  int nd = ops[0]->ndim;
  const int64_t *shape = ops[0]->shape;
  int64_t st[ITER_MAXOP][FDM_MAXDIM];
  for (int k = 0; k < nop; k++) for (int d = 0; d < nd; d++) st[k][d] = ops[k]->shape[d] == 1 ? 0 : ops[k]->stride[d];
  /* drop size-1 dims, then merge dim d into d+1 when every operand allows it */
  int m = 0;
  for (int d = 0; d < nd; d++) {
    if (shape[d] == 1) continue;
    if (m > 0) {
      int ok = 1;
      for (int k = 0; k < nop; k++) if (it->st[k][m - 1] != st[k][d] * shape[d]) ok = 0;
      if (ok) {
        it->shape[m - 1] *= shape[d];
        for (int k = 0; k < nop; k++) it->st[k][m - 1] = st[k][d];
        continue;
      }
    }
    it->shape[m] = shape[d];
    for (int k = 0; k < nop; k++) it->st[k][m] = st[k][d];
    m++;
  }
  if (m == 0) { it->shape[0] = 1; for (int k = 0; k < nop; k++) it->st[k][0] = 0; m = 1; }
  it->nd = m;
  for (int d = 0; d < m; d++) it->numel *= it->shape[d];
}

/* element offsets of the first element of row r (a row = the innermost dim) */
static inline void iter_row(const fdm_iter *it, int64_t r, int64_t *off) {
  for (int k = 0; k < ITER_MAXOP; k++) off[k] = 0;
  for (int d = it->nd - 2; d >= 0; d--) {
    int64_t i = r % it->shape[d];
    r /= it->shape[d];
    for (int k = 0; k < it->nop; k++) off[k] += i * it->st[k][d];
  }
}

#define ITER_BLOCK 8192
/* Runs BODY(j) for every element; inside BODY, o0..o3 are the offsets of the
** current element in each operand. Variables p0..p3 must be the base pointers. */
#define ITER_FOR(it, ...) do { \
    const fdm_iter *it_ = &(it); \
    int64_t inner_ = it_->shape[it_->nd - 1]; \
    int64_t nblk_ = (inner_ + ITER_BLOCK - 1) / ITER_BLOCK; \
    int64_t rows_ = inner_ ? it_->numel / inner_ : 0; \
    int64_t s0_ = it_->st[0][it_->nd - 1], s1_ = it_->nop > 1 ? it_->st[1][it_->nd - 1] : 0; \
    int64_t s2_ = it_->nop > 2 ? it_->st[2][it_->nd - 1] : 0, s3_ = it_->nop > 3 ? it_->st[3][it_->nd - 1] : 0; \
    _Pragma("omp parallel for schedule(static) if(it_->numel > 65536)") \
    for (int64_t task_ = 0; task_ < rows_ * nblk_; task_++) { \
      int64_t off_[ITER_MAXOP]; \
      int64_t r_ = task_ / nblk_, b_ = task_ % nblk_; \
      iter_row(it_, r_, off_); \
      int64_t j0_ = b_ * ITER_BLOCK, j1_ = inner_ - j0_ > ITER_BLOCK ? j0_ + ITER_BLOCK : inner_; \
      if (s0_ == 1 && s1_ == 1 && (it_->nop < 3 || s2_ == 1) && (it_->nop < 4 || s3_ == 1)) { \
        for (int64_t j = j0_; j < j1_; j++) { \
          int64_t o0 = off_[0] + j, o1 = off_[1] + j, o2 = off_[2] + j, o3 = off_[3] + j; \
          (void)o1; (void)o2; (void)o3; __VA_ARGS__; } \
      } else if (s0_ == 1 && s1_ == 1 && s2_ == 0 && it_->nop == 3) { \
        const int64_t o2 = off_[2], o3 = 0; \
        for (int64_t j = j0_; j < j1_; j++) { \
          int64_t o0 = off_[0] + j, o1 = off_[1] + j; \
          (void)o1; (void)o2; (void)o3; __VA_ARGS__; } \
      } else if (s0_ == 1 && s1_ == 0 && s2_ == 1 && it_->nop == 3) { \
        const int64_t o1 = off_[1], o3 = 0; \
        for (int64_t j = j0_; j < j1_; j++) { \
          int64_t o0 = off_[0] + j, o2 = off_[2] + j; \
          (void)o1; (void)o2; (void)o3; __VA_ARGS__; } \
      } else { \
        for (int64_t j = j0_; j < j1_; j++) { \
          int64_t o0 = off_[0] + j * s0_, o1 = off_[1] + j * s1_; \
          int64_t o2 = off_[2] + j * s2_, o3 = off_[3] + j * s3_; \
          (void)o1; (void)o2; (void)o3; __VA_ARGS__; } \
      } \
    } \
  } while (0)
#endif
