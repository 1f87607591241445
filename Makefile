# fdm build. `make` builds build/fdm and the Lua module build/fdm/core.so;
# `make test` runs every test; `make bench` times the UNets against PyTorch.
# Missing Debian packages are installed on first use (tools/deps.sh).

PREFIX   ?= /usr/local
CC       ?= cc
SAN      ?=
OPT      ?= -O3 -march=native
CFLAGS   ?= $(OPT) -g
# runtime/ in layers (docs/design.md): core, backend, ops, autograd, io, lua, app
RUNTIME_INC := $(patsubst %,-Iruntime/%,core backend ops autograd io lua app) -Ikernels -Ikernels/cpu
CFLAGS   += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Werror=implicit-function-declaration -Werror=int-conversion -fPIC -fopenmp \
            $(RUNTIME_INC) $(shell pkg-config --cflags lua5.4 cairo 2>/dev/null)
# OpenBLAS's OpenMP build shares one thread pool with fdm's own OpenMP loops;
# the default pthread build's spinning workers fight OpenMP's for the cores
# (measured: a small MLP step took 76 ms instead of 4 ms under load).
BLAS_DIR ?= /usr/lib/$(shell $(CC) -print-multiarch)/openblas-openmp
LDLIBS   += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lpng -ljpeg -lz -lgif -lm -fopenmp $(shell pkg-config --libs cairo 2>/dev/null)
ifeq ($(SAN),1)
  CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDLIBS += -fsanitize=address,undefined
  BUILD  := build-san
  # lua5.4 itself is not instrumented: preload the sanitizer runtimes for the module
  SAN_ENV = LD_PRELOAD="$(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so)" \
            ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  BUILD  := build
endif

MAIN_SRC := $(wildcard runtime/app/*.c)
CORE_SRC := $(filter-out $(MAIN_SRC),$(wildcard runtime/*/*.c)) $(wildcard kernels/cpu/*.c)
CORE_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(CORE_SRC))
MAIN_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(MAIN_SRC))
DEPS_STAMP := build/.deps-ok

.PHONY: all deps test test-c test-api-fuzz bench install clean data fuzz lua-module install-lua-module
all: $(BUILD)/fdm $(BUILD)/lua/fdm/core.so

deps: $(DEPS_STAMP)
$(DEPS_STAMP): tools/deps.sh
	@bash tools/deps.sh
	@mkdir -p build && touch $@

$(BUILD)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libfdm.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	ar rcs $@ $^

$(BUILD)/fdm: $(MAIN_OBJ) $(BUILD)/libfdm.a
	$(CC) $(CFLAGS) -o $@ $(MAIN_OBJ) $(BUILD)/libfdm.a -llua5.4 -lreadline $(LDLIBS)

# the module for a stock lua5.4: `require "fdm"` finds lua/fdm/init.lua,
# which loads fdm.core from this .so (lua5.4 itself provides the Lua API).
# nodelete: Lua unloads C modules at exit while OpenMP/OpenBLAS threads may
# still run code from them; keeping the .so mapped avoids a crash at exit.
$(BUILD)/lua/fdm/core.so: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -Wl,-z,nodelete -o $@ $(CORE_OBJ) $(LDLIBS)

-include $(CORE_OBJ:.o=.d) $(MAIN_OBJ:.o=.d)
-include mk/*.mk

LUA_ENV = LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/tests/?.lua;;" \
          LUA_CPATH="$(CURDIR)/$(BUILD)/lua/?.so;;" FDM_BIN="$(CURDIR)/$(BUILD)/fdm" \
          FDM_FAKE_BACKEND="$(CURDIR)/$(BUILD)/tests/fdm_fake_backend.so" FDM_BUILD="$(CURDIR)/$(BUILD)" OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} \
          FDM_DEVICE=$${FDM_DEVICE:-cpu}

test: all $(TEST_DEPS)
	$(LUA_ENV) $(SAN_ENV) lua5.4 /usr/bin/busted --lpath="" --cpath="" -o utfTerminal tests/
	$(MAKE) --no-print-directory test-c
	$(if $(filter 1,$(SAN)),$(MAKE) --no-print-directory SAN=1 test-api-fuzz)

# `make install PREFIX=...`: bin/fdm; the module (lib/lua/5.4/fdm/core.so,
# share/lua/5.4/fdm/*.lua); fdm's scripts and shipped weights in share/fdm
# (`fdm anagram` runs share/fdm/scripts/anagram.lua, and the scripts find
# share/fdm/weights from any directory: lua/fdm/weights.lua); the docs in
# share/doc/fdm (README.md, docs/, as in the source tree so links work).
SHARE_FDM = $(DESTDIR)$(PREFIX)/share/fdm
DOC_FDM   = $(DESTDIR)$(PREFIX)/share/doc/fdm
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/lua/5.4/fdm $(DESTDIR)$(PREFIX)/share/lua/5.4/fdm
	install -m 755 $(BUILD)/fdm $(DESTDIR)$(PREFIX)/bin/fdm
	install -m 755 $(BUILD)/lua/fdm/core.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/fdm/core.so
	install -m 644 lua/fdm/*.lua $(DESTDIR)$(PREFIX)/share/lua/5.4/fdm/
	install -d $(DESTDIR)$(PREFIX)/share/lua/5.4/fdm/deepfloyd
	install -m 644 lua/fdm/deepfloyd/*.lua $(DESTDIR)$(PREFIX)/share/lua/5.4/fdm/deepfloyd/
	install -d $(SHARE_FDM)/scripts/partA $(SHARE_FDM)/weights $(DOC_FDM)/docs/img
	install -m 644 scripts/*.lua $(SHARE_FDM)/scripts/
	install -m 644 scripts/partA/*.lua $(SHARE_FDM)/scripts/partA/
	install -m 644 weights/*.safetensors weights/*.md $(SHARE_FDM)/weights/
	install -m 644 README.md PERFORMANCE.md $(DOC_FDM)/
	install -m 644 docs/*.md $(DOC_FDM)/docs/
	install -m 644 docs/img/* $(DOC_FDM)/docs/img/

# LuaRocks (fdm-0.1.0-1.rockspec, `luarocks make`): the module alone, into the
# directories luarocks names (INST_LIBDIR for fdm/core.so, INST_LUADIR for
# fdm/*.lua)
lua-module: $(BUILD)/lua/fdm/core.so
install-lua-module: lua-module
	@test -n "$(INST_LIBDIR)" -a -n "$(INST_LUADIR)" || { echo "install-lua-module: set INST_LIBDIR and INST_LUADIR (luarocks make does)"; exit 2; }
	install -d $(INST_LIBDIR)/fdm $(INST_LUADIR)/fdm
	install -m 755 $(BUILD)/lua/fdm/core.so $(INST_LIBDIR)/fdm/core.so
	install -m 644 lua/fdm/*.lua $(INST_LUADIR)/fdm/

clean:
	rm -rf build build-san

# C-level tests: mk/*.mk files append executables to C_TESTS
test-c: $(C_TESTS)
	@set -e; for t in $(C_TESTS); do echo "== $$t"; OMP_NUM_THREADS=2 $(SAN_ENV) ./$$t; done
