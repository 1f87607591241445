# The CUDA backend: $(BUILD)/lua/fdm/fdm_backend_cuda.so, a plugin fdm loads
# only when the device "cuda" is asked for or listed (runtime/backend), so
# fdm itself never links CUDA. Built when nvcc, cuDNN and cuBLAS are found;
# CUDA=0 never builds it, CUDA=1 requires it. The toolkit is looked for in
# CUDA_HOME (default /usr/local/cuda, or nvcc's on the PATH), the libraries
# also in the Python environment of PyTorch (site-packages/nvidia/{cudnn,
# cublas,cu13,...}), which has versioned sonames only: the plugin links
# -l:libcudnn.so.9 style names, found either way. cudart, libstdc++ and
# libgcc are linked static, so the plugin needs only cuDNN and cuBLAS.
# Every kernels/cuda/*.cu is compiled in (sm_90 code plus compute_90 PTX).
CUDA ?= auto
NVCC_PATH := $(shell command -v nvcc 2>/dev/null)
CUDA_HOME ?= $(if $(NVCC_PATH),$(patsubst %/bin/nvcc,%,$(NVCC_PATH)),/usr/local/cuda)
NVCC ?= $(CUDA_HOME)/bin/nvcc
CUDA_ARCH ?= -gencode arch=compute_90,code=[sm_90,compute_90]
# the Python environment's nvidia packages (only when python3 is there)
CUDA_PY_NVIDIA := $(if $(filter 0,$(CUDA)),,$(shell python3 -c 'import nvidia, os; print(" ".join(os.path.join(p) for p in nvidia.__path__))' 2>/dev/null))
CUDA_INC_DIRS := $(CUDA_HOME)/include $(foreach d,$(CUDA_PY_NVIDIA),$(wildcard $(d)/cudnn/include $(d)/cublas/include $(d)/cu13/include $(d)/cuda_runtime/include))
CUDA_LIB_DIRS := $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib $(foreach d,$(CUDA_PY_NVIDIA),$(wildcard $(d)/cudnn/lib $(d)/cublas/lib $(d)/cu13/lib $(d)/cuda_runtime/lib))
# first directory holding <header> / first versioned soname of <lib>
cuda_find_inc = $(firstword $(foreach d,$(CUDA_INC_DIRS),$(if $(wildcard $(d)/$(1)),$(d))))
cuda_find_lib = $(firstword $(foreach d,$(CUDA_LIB_DIRS),$(wildcard $(d)/$(1).so.[0-9]*)))
CUDNN_INC  := $(call cuda_find_inc,cudnn.h)
CUBLAS_INC := $(call cuda_find_inc,cublas_v2.h)
CUDNN_SO   := $(call cuda_find_lib,libcudnn)
CUBLAS_SO  := $(call cuda_find_lib,libcublas)
CUDA_MISSING := $(if $(wildcard $(NVCC)),,nvcc) $(if $(CUDNN_INC),,cudnn.h) $(if $(CUBLAS_INC),,cublas_v2.h) \
                $(if $(CUDNN_SO),,libcudnn.so.N) $(if $(CUBLAS_SO),,libcublas.so.N)
CUDA_MISSING := $(strip $(CUDA_MISSING))
ifeq ($(CUDA),0)
  CUDA_ENABLED := 0
else ifeq ($(CUDA),1)
  CUDA_ENABLED := 1
  ifneq ($(CUDA_MISSING),)
    $(error CUDA=1 but the CUDA backend cannot be built: missing $(CUDA_MISSING) (CUDA_HOME=$(CUDA_HOME)))
  endif
else
  CUDA_ENABLED := $(if $(CUDA_MISSING),0,1)
endif

CUDA_PLUGIN := $(BUILD)/lua/fdm/fdm_backend_cuda.so
CUDA_SRC := $(wildcard kernels/cuda/*.cu)
CUDA_OBJ := $(patsubst %.cu,$(BUILD)/obj/%.o,$(CUDA_SRC))
CUDA_LIBDIRS_USED := $(sort $(dir $(CUDNN_SO) $(CUBLAS_SO)))
NVCCFLAGS ?= -O2
NVCCFLAGS += -std=c++17 --extended-lambda $(CUDA_ARCH) -Xcompiler -fPIC,-Wall,-Wno-unused-parameter,-fvisibility=hidden \
             -Iruntime/core -Ikernels -Ikernels/cuda $(addprefix -I,$(sort $(CUDNN_INC) $(CUBLAS_INC)))
CUDA_LDLIBS := $(addprefix -L,$(CUDA_LIBDIRS_USED)) $(addprefix -Xlinker -rpath -Xlinker ,$(CUDA_LIBDIRS_USED)) \
               -l:$(notdir $(CUDNN_SO)) -l:$(notdir $(CUBLAS_SO)) -cudart static

.PHONY: cuda-info test-cuda
cuda-info:
	@echo "CUDA=$(CUDA) enabled=$(CUDA_ENABLED) nvcc=$(NVCC) cudnn=$(CUDNN_SO) cublas=$(CUBLAS_SO) missing='$(CUDA_MISSING)'"

ifeq ($(CUDA_ENABLED),1)
all: $(CUDA_PLUGIN)

$(BUILD)/obj/kernels/cuda/%.o: kernels/cuda/%.cu kernels/cuda/cuda_kernels.h $(wildcard kernels/cuda/*.cuh) \
                                kernels/fdm_kernels.h kernels/fdm_kernels_nn.h kernels/fdm_device.h kernels/common/philox.h runtime/core/fdm.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# bench/cudnn_probe.cu: cuDNN's legacy against its graph API on the UNets'
# convolutions (a measurement program for the GPU machine; tools/gpu-bundle.sh)
$(BUILD)/gpu/bin/cudnn_probe: bench/cudnn_probe.cu kernels/cuda/nn_conv_cudnn_graph.cu kernels/cuda/nn_conv_cudnn_graph.cuh
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -Xcompiler -static-libstdc++,-static-libgcc -o $@ bench/cudnn_probe.cu \
	  kernels/cuda/nn_conv_cudnn_graph.cu $(CUDA_LDLIBS)

$(CUDA_PLUGIN): $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_ARCH) -shared -Xcompiler -static-libstdc++,-static-libgcc -o $@ $(CUDA_OBJ) $(CUDA_LDLIBS)
endif

# `make test-cuda`: the GPU parity suite (tests/cuda/parity.lua) run by fdm
# itself; without a CUDA device it says so and passes as skipped
test-cuda: all
	$(LUA_ENV) ./$(BUILD)/fdm tests/cuda/parity.lua

# tools/gpu-bundle.sh: an fdm that finds the libraries the bundle brings in
# ../lib before anything else (DT_RPATH, which also covers their own
# dependencies), so the GPU machine's LD_LIBRARY_PATH only adds CUDA's
$(BUILD)/gpu/bin/fdm: $(MAIN_OBJ) $(BUILD)/libfdm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(MAIN_OBJ) $(BUILD)/libfdm.a -llua5.4 -lreadline \
	  -Wl,--disable-new-dtags,-rpath,'$$ORIGIN/../lib' $(LDLIBS)
# `make test-cuda-graphs`: CUDA graphs against eager runs on the GPU
# (tests/cuda/graphs.lua, run by fdm); without a CUDA device it says so and
# passes as skipped. FDM_GRAPHS_DEVICE=fake runs it with emulated graphs.
.PHONY: test-cuda-graphs
test-cuda-graphs: all
	$(LUA_ENV) ./$(BUILD)/fdm tests/cuda/graphs.lua
# `make test-cuda-deepfloyd`: DeepFloyd IF's tiny folders on the GPU against
# the CPU in fp32, with fp16 weights, and at bf16/fp16 precision
# (tests/cuda/deepfloyd.lua, run by fdm); without a CUDA device it says so
# and passes as skipped. FDM_IF_DEVICE=fake runs it on the test device.
.PHONY: test-cuda-deepfloyd
test-cuda-deepfloyd: all
	$(LUA_ENV) FDM_TF32=0 ./$(BUILD)/fdm tests/cuda/deepfloyd.lua
