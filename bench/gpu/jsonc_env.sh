#!/usr/bin/env bash
# Source this on the GPU machine, which has no json-c (needed to load
# safetensors checkpoints and tokenizer.json). Unpacks the Debian packages that
# travel in the git-ignored .debs/ folder (fill it here with
#   mkdir -p .debs && (cd .debs && apt-get download libjson-c5 libjson-c-dev)
# and name .debs in the run's carry list) into /tmp/jsonc, never into /.
if [ -d .debs ] && ! pkg-config --exists json-c 2>/dev/null; then
  for f in .debs/*.deb; do dpkg -x "$f" /tmp/jsonc; done
  pcdir=/tmp/jsonc/usr/lib/x86_64-linux-gnu/pkgconfig
  sed -i "s|=/usr|=/tmp/jsonc/usr|" "$pcdir/json-c.pc"
  export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="/tmp/jsonc/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
