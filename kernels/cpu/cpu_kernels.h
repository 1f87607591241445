/*
** cpu_kernels.h: the CPU backend's entries of the kernel table
** (runtime/backend/fdm_kernels.h): cpu_kernel_<name> for every slot <name>.
** Each file of kernels/cpu/ defines the entries of its ops; cpu_backend.c
** puts them in the table, so a slot without a CPU kernel fails to link.
*/
#ifndef CPU_KERNELS_H
#define CPU_KERNELS_H
#include "fdm_kernels.h"

#define CPU_KERNEL_DECL(name, params) int cpu_kernel_##name params;
FDM_ALL_KERNELS(CPU_KERNEL_DECL)
#undef CPU_KERNEL_DECL

/* big parallel loops: only fork threads when there is enough work */
#define CPU_PAR_MIN 32768
#endif
