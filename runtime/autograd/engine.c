/* engine.c: the reverse pass over the recorded tape (core/autograd.c).
** It sits above the ops: accumulating gradients runs add and clone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_autograd.h"
#include "fdm_engine.h"
#include "fdm_ops.h"

/* acc += g (both float32, same shape); *acc created from g when NULL. Runs
** with grad mode off (inside fdm_backward), so copies record no history. A
** gradient nobody else holds is adopted; one that shares storage is copied,
** since later accumulation writes into it. */
static int accumulate(fdm_tensor **acc, fdm_tensor *g) {
  if (!*acc) {
    if (g->refs == 1 && g->storage->refs == 1 && g->offset == 0 && fdm_is_contiguous(g)) {
      fdm_retain(g);
      *acc = g;
      return 0;
    }
    *acc = fdm_clone(g);
    return *acc ? 0 : -1;
  }
  return fdm_add_scaled_(*acc, g, 1.0);
}

int fdm_backward(fdm_tensor *root, fdm_tensor *grad) {
  char b1[128], b2[128];
  if (!root->requires_grad)
    return fdm_seterror("backward: the tensor does not require grad (no recorded history)");
  fdm_tensor *g0;
  if (grad) {
    if (!fdm_same_shape(grad, root))
      return fdm_seterror("backward: gradient shape %s does not match tensor shape %s",
                          fdm_shapestr(grad, b1, sizeof b1), fdm_shapestr(root, b2, sizeof b2));
    g0 = fdm_float_contig(grad);
  } else {
    if (fdm_numel(root) != 1)
      return fdm_seterror("backward: grad can be implicitly created only for a single-element "
                          "tensor, got shape %s; pass a gradient", fdm_shapestr(root, b1, sizeof b1));
    g0 = fdm_full(FDM_FLOAT32, root->ndim, root->shape, 1.0, root->device);
  }
  if (!g0) return -1;
  int prev = fdm_set_grad_enabled(0), rc = 0;
  if (!root->grad_fn) { rc = accumulate(&root->grad, g0); goto done; }

  /* 1. collect the graph (DFS) and count how many consumers each node has */
  int cap = 256, nn = 0;
  fdm_node **nodes = malloc(cap * sizeof *nodes), **stack = malloc(cap * sizeof *stack);
  int sp = 0;
  if (!nodes || !stack) { rc = fdm_seterror("backward: out of memory"); goto free_lists; }
  root->grad_fn->pending = 0;
  stack[sp++] = root->grad_fn;
  root->grad_fn->topo_next = (fdm_node *)1;   /* mark visited */
  while (sp) {
    fdm_node *n = stack[--sp];
    if (n->released) {
      rc = fdm_seterror("backward: trying to backward through the graph a second time (op '%s'); "
                        "its saved tensors were released by the first backward()", n->name);
      break;
    }
    if (nn == cap) {
      cap *= 2;
      fdm_node **nn2 = realloc(nodes, cap * sizeof *nodes), **ns2 = realloc(stack, cap * sizeof *stack);
      if (nn2) nodes = nn2;
      if (ns2) stack = ns2;
      if (!nn2 || !ns2) { rc = fdm_seterror("backward: out of memory"); break; }
    }
    nodes[nn++] = n;
    for (int i = 0; i < n->ninputs; i++) {
      fdm_node *c = n->in[i].fn;
      if (!c) continue;
      if (c->topo_next != (fdm_node *)1) { c->topo_next = (fdm_node *)1; c->pending = 0; stack[sp++] = c; }
      c->pending++;
    }
  }
  for (int k = 0; k < nn; k++) nodes[k]->topo_next = NULL;
  if (rc) goto free_lists;

  /* 2. Kahn's order: a node runs once all its consumers have given their gradient */
  root->grad_fn->gacc = g0; fdm_retain(g0);
  sp = 0;
  stack[sp++] = root->grad_fn;
  while (sp && rc == 0) {
    fdm_node *n = stack[--sp];
    fdm_tensor **gin = calloc(n->ninputs ? n->ninputs : 1, sizeof *gin);
    if (!gin) { rc = fdm_seterror("backward: out of memory"); break; }
    if (n->gacc && (fdm_node_check_saved(n) || n->backward(n, n->gacc, gin) != 0)) {
      char msg[1024];
      snprintf(msg, sizeof msg, "backward of %s: %s", n->name, fdm_lasterror());
      rc = fdm_seterror("%s", msg);
    }
    for (int i = 0; i < n->ninputs; i++) {
      fdm_tensor *g = gin[i];
      const fdm_node_input *in = &n->in[i];
      if (g && rc == 0 && in->needs) {
        if (g->ndim != in->ndim || memcmp(g->shape, in->shape, g->ndim * sizeof(int64_t)))
          rc = fdm_seterror("backward of %s: internal error, gradient %d has shape %s", n->name,
                            i + 1, fdm_shapestr(g, b1, sizeof b1));
        else if (in->fn) rc = accumulate(&in->fn->gacc, g);
        else if (in->leaf) rc = accumulate(&in->leaf->grad, g);
      }
      fdm_release(g);
      if (in->fn && --in->fn->pending == 0) stack[sp++] = in->fn;
    }
    free(gin);
    fdm_node_drop_buffers(n);
    n->released = 1;
  }
  /* on error, drop what is left so memory is not held */
  for (int k = 0; k < nn; k++) if (rc) { fdm_node_drop_buffers(nodes[k]); nodes[k]->released = 1; }
free_lists:
  free(nodes);
  free(stack);
done:
  fdm_release(g0);
  fdm_set_grad_enabled(prev);
  return rc;
}
