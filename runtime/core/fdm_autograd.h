/*
** fdm_autograd.h: the reverse-mode tape. An op that wants gradients calls
** fdm_node_new() (NULL when grad mode is off or no input requires grad),
** saves what its backward needs, and attaches the node to its output.
*/
#ifndef FDM_AUTOGRAD_H
#define FDM_AUTOGRAD_H
#include "fdm.h"

#define FDM_NODE_MAXIN 8
#define FDM_NODE_MAXSAVED 8

typedef struct fdm_node fdm_node;
/* Computes gin[i] (a NEW reference, or NULL for "no gradient") for every
** input i with n->needs[i] set, from gout (the gradient of the output, same
** shape as the output, contiguous float32). Returns 0, or -1 with the error set. */
typedef int (*fdm_backward_fn)(fdm_node *n, fdm_tensor *gout, fdm_tensor **gin);

typedef struct fdm_edge {
  fdm_node *fn;        /* input's grad_fn (retained), or NULL */
  fdm_tensor *leaf;    /* input itself when it is a leaf requiring grad (retained), or NULL */
} fdm_edge;

struct fdm_node {
  int refs;
  const char *name;              /* op name, shown as t.grad_fn */
  fdm_backward_fn backward;
  int ninputs;
  fdm_edge next[FDM_NODE_MAXIN];
  int needs[FDM_NODE_MAXIN];     /* input i requires grad */
  int in_ndim[FDM_NODE_MAXIN];   /* input shapes, for reducing broadcast grads */
  int64_t in_shape[FDM_NODE_MAXIN][FDM_MAXDIM];
  fdm_tensor *saved[FDM_NODE_MAXSAVED];
  int nsaved;
  double f[8];                   /* op scalars (alpha, eps, momentum, ...) */
  int64_t i[24];                 /* op integers (dims, strides, paddings, ...) */
  void *extra;                   /* op-owned blob, freed with free() */
  /* used by the engine */
  int released, pending;
  fdm_tensor *gacc;
  fdm_node *topo_next;
};

int fdm_grad_enabled(void);
int fdm_set_grad_enabled(int on);   /* returns previous */

/* NULL when no gradient is needed: then the op records nothing. */
fdm_node *fdm_node_new(const char *name, fdm_backward_fn bw, int ninputs, fdm_tensor *const *inputs);
void fdm_node_save(fdm_node *n, fdm_tensor *t);        /* retains t into n->saved[n->nsaved++] */
void fdm_node_attach(fdm_tensor *out, fdm_node *n);    /* out takes over the node reference */
/* saves the op's own output (without its history, which would be a cycle) */
void fdm_node_save_output(fdm_node *n, fdm_tensor *out);
void fdm_node_release(fdm_node *n);

/* Runs backward from root. grad NULL means ones (root must have 1 element).
** Leaves' .grad are accumulated. The graph's saved tensors are released. */
int fdm_backward(fdm_tensor *root, fdm_tensor *grad);

/* Helper for backward functions: sum g down to input i's shape (undoing broadcasting). */
fdm_tensor *fdm_reduce_to_input(fdm_node *n, int i, fdm_tensor *g);
#endif
