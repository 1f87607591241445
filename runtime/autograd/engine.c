/* autograd.c: recording nodes and running the reverse pass. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"

static _Thread_local int grad_enabled = 1;

int fdm_grad_enabled(void) { return grad_enabled; }
int fdm_set_grad_enabled(int on) { int old = grad_enabled; grad_enabled = on; return old; }

fdm_node *fdm_node_new(const char *name, fdm_backward_fn bw, int ninputs, fdm_tensor *const *inputs) {
  if (!grad_enabled) return NULL;
  int any = 0;
  for (int i = 0; i < ninputs; i++) if (inputs[i] && inputs[i]->requires_grad) any = 1;
  if (!any) return NULL;
  fdm_node *n = calloc(1, sizeof *n);
  if (!n) return NULL;   /* treated as "no grad"; the caller's result simply has no history */
  n->refs = 1; n->name = name; n->backward = bw; n->ninputs = ninputs;
  for (int i = 0; i < ninputs; i++) {
    fdm_tensor *t = inputs[i];
    if (!t) continue;
    n->in_ndim[i] = t->ndim;
    memcpy(n->in_shape[i], t->shape, sizeof t->shape);
    if (!t->requires_grad) continue;
    n->needs[i] = 1;
    if (t->grad_fn) { n->next[i].fn = t->grad_fn; t->grad_fn->refs++; }
    else { n->next[i].leaf = t; fdm_retain(t); }
  }
  return n;
}

void fdm_node_save(fdm_node *n, fdm_tensor *t) {
  fdm_retain(t);
  n->saved[n->nsaved++] = t;
}

/* A node that kept its own output would form a cycle (out -> grad_fn -> out)
** and never be freed; it keeps a header over the same storage instead. */
void fdm_node_save_output(fdm_node *n, fdm_tensor *out) {
  fdm_tensor *alias = fdm_make_view(out, out->ndim, out->shape, out->stride, out->offset);
  if (alias) n->saved[n->nsaved++] = alias;
}

void fdm_node_attach(fdm_tensor *out, fdm_node *n) {
  if (!n) return;
  out->grad_fn = n;
  out->requires_grad = 1;
}

static void node_drop_buffers(fdm_node *n) {
  for (int i = 0; i < n->nsaved; i++) { fdm_release(n->saved[i]); n->saved[i] = NULL; }
  n->nsaved = 0;
  fdm_release(n->gacc); n->gacc = NULL;
  free(n->extra); n->extra = NULL;
}

/* iterative, so that freeing a graph thousands of nodes deep cannot overflow the C stack */
void fdm_node_release(fdm_node *n) {
  fdm_node *stack = NULL;
  if (n && --n->refs == 0) { n->topo_next = stack; stack = n; }
  while (stack) {
    fdm_node *cur = stack;
    stack = cur->topo_next;
    node_drop_buffers(cur);
    for (int i = 0; i < cur->ninputs; i++) {
      fdm_release(cur->next[i].leaf);
      fdm_node *c = cur->next[i].fn;
      if (c && --c->refs == 0) { c->topo_next = stack; stack = c; }
    }
    free(cur);
  }
}

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
      fdm_node *c = n->next[i].fn;
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
    fdm_tensor *gin[FDM_NODE_MAXIN] = {0};
    if (n->gacc && n->backward(n, n->gacc, gin) != 0) {
      char msg[1024];
      snprintf(msg, sizeof msg, "backward of %s: %s", n->name, fdm_lasterror());
      rc = fdm_seterror("%s", msg);
    }
    for (int i = 0; i < n->ninputs; i++) {
      fdm_tensor *g = gin[i];
      if (g && rc == 0 && n->needs[i]) {
        if (g->ndim != n->in_ndim[i] || memcmp(g->shape, n->in_shape[i], g->ndim * sizeof(int64_t)))
          rc = fdm_seterror("backward of %s: internal error, gradient %d has shape %s", n->name,
                            i + 1, fdm_shapestr(g, b1, sizeof b1));
        else if (n->next[i].fn) rc = accumulate(&n->next[i].fn->gacc, g);
        else if (n->next[i].leaf) rc = accumulate(&n->next[i].leaf->grad, g);
      }
      fdm_release(g);
      fdm_node *c = n->next[i].fn;
      if (c && --c->pending == 0) stack[sp++] = c;
    }
    node_drop_buffers(n);
    n->released = 1;
  }
  /* on error, drop what is left so memory is not held */
  for (int k = 0; k < nn; k++) if (rc) { node_drop_buffers(nodes[k]); nodes[k]->released = 1; }
free_lists:
  free(nodes);
  free(stack);
done:
  fdm_release(g0);
  fdm_set_grad_enabled(prev);
  return rc;
}

fdm_tensor *fdm_reduce_to_input(fdm_node *n, int i, fdm_tensor *g) {
  int nd = n->in_ndim[i];
  const int64_t *shape = n->in_shape[i];
  if (g->ndim == nd && memcmp(g->shape, shape, nd * sizeof(int64_t)) == 0) { fdm_retain(g); return g; }
  int dims[FDM_MAXDIM], k = 0, lead = g->ndim - nd;
  for (int d = 0; d < g->ndim; d++)
    if (d < lead || (shape[d - lead] == 1 && g->shape[d] != 1)) dims[k++] = d;
  fdm_tensor *s = k ? fdm_sum(g, k, dims, 1) : (fdm_retain(g), g);
  if (!s) return NULL;
  fdm_tensor *r = fdm_reshape(s, nd, shape);
  fdm_release(s);
  return r;
}
