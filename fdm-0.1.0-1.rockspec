-- LuaRocks: `luarocks make` in the source tree builds the C core with the
-- Makefile (Debian packages it lacks are installed by tools/deps.sh) and
-- installs the Lua module: `require "fdm"` from lua5.4. The fdm executable,
-- the scripts and the weights come with `make install` instead.
rockspec_format = "3.0"
package = "fdm"
version = "0.1.0-1"
source = {
  -- built from the working tree by `luarocks make`; there is no published archive
  url = "git+file://./",
}
description = {
  summary = "A small compute runtime for diffusion and flow-matching experiments, scripted in Lua",
  detailed = [[
Tensors with autograd, neural-network layers, optimizers, image and
safetensors I/O, written in C (OpenBLAS, OpenMP, cairo) and exposed to Lua 5.4.
]],
  license = "unspecified",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
-- CFLAGS is not passed on (luarocks warns about it): the Makefile picks its
-- own flags, include paths and libraries, which a command-line CFLAGS would replace.
build = {
  type = "make",
  build_target = "lua-module",
  install_target = "install-lua-module",
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
  },
}
