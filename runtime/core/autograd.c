/* autograd.c: recording the tape (grad mode, nodes, saved tensors). The
** reverse pass is autograd/engine.c. */
#include <stdlib.h>
#include <string.h>
#include "fdm_autograd.h"

static _Thread_local int grad_enabled = 1;

int fdm_grad_enabled(void) { return grad_enabled; }
int fdm_set_grad_enabled(int on) { int old = grad_enabled; grad_enabled = on; return old; }

int fdm_node_new(const char *name, fdm_backward_fn bw, int ninputs, fdm_tensor *const *inputs,
                 size_t state_size, fdm_node **out) {
  *out = NULL;
  if (!grad_enabled) return 0;
  int any = 0;
  for (int i = 0; i < ninputs; i++) if (inputs[i] && inputs[i]->requires_grad) any = 1;
  if (!any) return 0;
  if (ninputs > FDM_NODE_MAXINPUTS)
    return fdm_seterror("%s: at most %d inputs can be recorded for gradients, got %d", name,
                        FDM_NODE_MAXINPUTS, ninputs);
  fdm_node *n = calloc(1, sizeof *n);
  fdm_node_input *in = n ? calloc(ninputs ? ninputs : 1, sizeof *in) : NULL;
  void *state = in ? calloc(1, state_size ? state_size : 1) : NULL;
  if (!state) {
    free(n); free(in);
    return fdm_seterror("%s: out of memory recording the autograd node", name);
  }
  n->refs = 1; n->name = name; n->backward = bw; n->ninputs = ninputs; n->in = in;
  n->state = state; n->state_size = state_size;
  for (int i = 0; i < ninputs; i++) {
    fdm_tensor *t = inputs[i];
    if (!t) continue;
    in[i].ndim = t->ndim;
    memcpy(in[i].shape, t->shape, sizeof t->shape);
    if (!t->requires_grad) continue;
    in[i].needs = 1;
    if (t->grad_fn) { in[i].fn = t->grad_fn; t->grad_fn->refs++; }
    else { in[i].leaf = t; fdm_retain(t); }
  }
  *out = n;
  return 0;
}

void *fdm_node_state(fdm_node *n, size_t size) {
  if (n->state_size != size) {
    fdm_seterror("%s: internal error, backward expects %zu bytes of state, the node holds %zu",
                 n->name, size, n->state_size);
    return NULL;
  }
  return n->state;
}

static int slot_in_state(const fdm_node *n, fdm_tensor **slot) {
  const char *p = (const char *)slot, *s = n->state;
  return p >= s && p + sizeof *slot <= s + n->state_size;
}

static void remember(fdm_node *n, fdm_tensor **slot, fdm_tensor *t) {
  if (!t) { n->failed = 1; return; }
  if (n->nsaved == FDM_NODE_MAXSAVED || !slot_in_state(n, slot) || *slot) {
    fdm_seterror("%s: internal error, a saved tensor slot is out of bounds or reused", n->name);
    fdm_release(t);
    n->failed = 1;
    return;
  }
  *slot = t;
  n->saved_slot[n->nsaved] = slot;
  n->saved_version[n->nsaved] = t->storage ? t->storage->version : 0;
  n->nsaved++;
}

void fdm_node_save(fdm_node *n, fdm_tensor **slot, fdm_tensor *t) {
  fdm_retain(t);
  remember(n, slot, t);
}

/* A node that kept its own output would form a cycle (out -> grad_fn -> out)
** and never be freed; it keeps a header over the same storage instead. */
void fdm_node_save_output(fdm_node *n, fdm_tensor **slot, fdm_tensor *out) {
  remember(n, slot, fdm_make_view(out, out->ndim, out->shape, out->stride, out->offset));
}

int fdm_node_attach(fdm_tensor *out, fdm_node *n) {
  if (!n) return 0;
  if (n->failed) {
    fdm_node_release(n);
    return -1;
  }
  out->grad_fn = n;
  out->requires_grad = 1;
  return 0;
}

int fdm_node_needs(const fdm_node *n, int i) { return i >= 0 && i < n->ninputs && n->in[i].needs; }

const fdm_node_input *fdm_node_input_at(const fdm_node *n, int i) {
  return i >= 0 && i < n->ninputs ? &n->in[i] : NULL;
}

int fdm_node_check_saved(const fdm_node *n) {
  for (int k = 0; k < n->nsaved; k++) {
    const fdm_tensor *t = *n->saved_slot[k];
    if (t && t->storage && t->storage->version != n->saved_version[k])
      return fdm_seterror("one of the variables needed for gradient computation has been modified "
                          "by an inplace operation: tensor %d saved by %s is at version %llu; "
                          "expected version %llu instead", k + 1, n->name,
                          (unsigned long long)t->storage->version,
                          (unsigned long long)n->saved_version[k]);
  }
  return 0;
}

void fdm_node_drop_buffers(fdm_node *n) {
  for (int k = 0; k < n->nsaved; k++) { fdm_release(*n->saved_slot[k]); *n->saved_slot[k] = NULL; }
  n->nsaved = 0;
  fdm_release(n->gacc); n->gacc = NULL;
}

/* iterative, so that freeing a graph thousands of nodes deep cannot overflow the C stack */
void fdm_node_release(fdm_node *n) {
  fdm_node *stack = NULL;
  if (n && --n->refs == 0) { n->topo_next = stack; stack = n; }
  while (stack) {
    fdm_node *cur = stack;
    stack = cur->topo_next;
    fdm_node_drop_buffers(cur);
    for (int i = 0; i < cur->ninputs; i++) {
      fdm_release(cur->in[i].leaf);
      fdm_node *c = cur->in[i].fn;
      if (c && --c->refs == 0) { c->topo_next = stack; stack = c; }
    }
    free(cur->in);
    free(cur->state);
    free(cur);
  }
}
