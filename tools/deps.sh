#!/usr/bin/env bash
# Installs the Debian packages fdm needs when they are missing (fresh Debian 12).
set -e
need="gcc make pkg-config lua5.4 liblua5.4-dev libreadline-dev libpng-dev zlib1g-dev
      libcairo2-dev libgif-dev libopenblas-openmp-dev lua-busted fonts-dejavu-core"
missing=""
for p in $need; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "fdm: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
