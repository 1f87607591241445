/*
** fdm_engine.h: the reverse pass. It sits above the ops because gradient
** accumulation runs ops (add, clone); the ops only record nodes (core).
*/
#ifndef FDM_ENGINE_H
#define FDM_ENGINE_H
#include "fdm.h"
/* Runs backward from root. grad NULL means ones (root must have 1 element).
** Leaves' .grad are accumulated. The graph's saved tensors are released. */
int fdm_backward(fdm_tensor *root, fdm_tensor *grad);
#endif
