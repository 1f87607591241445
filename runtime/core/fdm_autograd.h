/*
** fdm_autograd.h: the reverse-mode tape (recording: core/autograd.c; the
** reverse pass: autograd/engine.c, which sits above the ops it calls).
**
** An op that wants gradients asks fdm_node_new() for a node with room for its
** own state struct, fills that struct's named fields (scalars, and the
** tensors its backward needs, saved through fdm_node_save so the node owns
** them and autograd can detect later in-place changes), and attaches the node
** to its output:
**
**   typedef struct { fdm_tensor *x, *w; int64_t M; } linear_state;
**   fdm_node *n;
**   if (fdm_node_new("linear", linear_backward, 3, in, sizeof(linear_state), &n)) goto fail;
**   if (n) {
**     linear_state *s = n->state;
**     s->M = M;
**     fdm_node_save(n, &s->x, x);
**     if (fdm_node_attach(out, n)) goto fail;   // a failed save is reported here
**   }
**
** and its backward reads them back by name: FDM_NODE_STATE(n, linear_state).
*/
#ifndef FDM_AUTOGRAD_H
#define FDM_AUTOGRAD_H
#include "fdm.h"

#define FDM_NODE_MAXSAVED 8      /* tensors one node may save */
#define FDM_NODE_MAXINPUTS 4096  /* inputs of one node (cat/stack of many tensors) */

typedef struct fdm_node fdm_node;
/* Computes gin[i] (a NEW reference, or NULL for "no gradient") for every
** input i with fdm_node_needs(n, i), from gout (the gradient of the output,
** same shape as the output, contiguous float32). gin has n->ninputs entries.
** Returns 0, or -1 with the error set. */
typedef int (*fdm_backward_fn)(fdm_node *n, fdm_tensor *gout, fdm_tensor **gin);

typedef struct fdm_node_input {
  fdm_node *fn;          /* input's grad_fn (retained), or NULL */
  fdm_tensor *leaf;      /* input itself when it is a leaf requiring grad (retained), or NULL */
  int needs;             /* the input requires grad */
  int ndim;              /* the input's shape, for reducing broadcast gradients */
  int64_t shape[FDM_MAXDIM];
} fdm_node_input;

struct fdm_node {
  int refs;
  const char *name;              /* op name, shown as t.grad_fn */
  fdm_backward_fn backward;
  int ninputs;
  fdm_node_input *in;            /* [ninputs] */
  void *state;                   /* the op's state struct, zeroed, state_size bytes */
  size_t state_size;
  /* saved tensors: where they live inside state, and their storage version when saved */
  int nsaved;
  fdm_tensor **saved_slot[FDM_NODE_MAXSAVED];
  uint64_t saved_version[FDM_NODE_MAXSAVED];
  int failed;                    /* a save failed: fdm_node_attach reports it */
  /* used by the engine */
  int released, pending;
  fdm_tensor *gacc;
  fdm_node *topo_next;
};

int fdm_grad_enabled(void);
int fdm_set_grad_enabled(int on);   /* returns previous */

/* *out = a new node when grad mode is on and an input requires grad, else
** NULL (nothing to record). Returns 0, or -1 with the error set when memory
** runs out: the op must then fail, not silently lose the gradient. */
int fdm_node_new(const char *name, fdm_backward_fn bw, int ninputs, fdm_tensor *const *inputs,
                 size_t state_size, fdm_node **out);
/* the node's state as a struct of the given size, or NULL with the error set
** when the sizes disagree (a backward reading another op's state) */
void *fdm_node_state(fdm_node *n, size_t size);
#define FDM_NODE_STATE(n, type) ((type *)fdm_node_state((n), sizeof(type)))
/* retains t into *slot (a field of n->state) and remembers its version */
void fdm_node_save(fdm_node *n, fdm_tensor **slot, fdm_tensor *t);
/* saves the op's own output (without its history, which would be a cycle) */
void fdm_node_save_output(fdm_node *n, fdm_tensor **slot, fdm_tensor *out);
/* out takes over the node reference; NULL n is a no-op. Returns -1 (node
** released, error set) when a save into the node failed. */
int fdm_node_attach(fdm_tensor *out, fdm_node *n);
void fdm_node_release(fdm_node *n);
/* bounds-checked access to input i */
int fdm_node_needs(const fdm_node *n, int i);
const fdm_node_input *fdm_node_input_at(const fdm_node *n, int i);
/* 0 when every saved tensor is unchanged since it was saved, else -1 with
** PyTorch's "modified by an inplace operation" error */
int fdm_node_check_saved(const fdm_node *n);
/* drops the saved tensors and the accumulated gradient (after backward) */
void fdm_node_drop_buffers(fdm_node *n);
#endif
