#!/usr/bin/env bash
# Source this on a machine without Open MPI (the lent GPU machine has none and no package
# registry): unpacks Debian's Open MPI packages that travel in the git-ignored .debs-mpi/
# (fill it here with bench/dp/fetch_mpi_debs.sh, about 8 MB, and name .debs-mpi in the
# run's carry list) into /tmp/mpi, never into /, and points PATH, LD_LIBRARY_PATH and
# OPAL_PREFIX (Open MPI's relocation) there. FORCE_MPI_DEBS=1 uses them even where an
# mpirun exists (to test the relocation).
if [ -d .debs-mpi ] && { ! command -v mpirun >/dev/null || [ "${FORCE_MPI_DEBS:-0}" = 1 ]; }; then
  root=/tmp/mpi
  if [ ! -x $root/usr/bin/orterun ]; then
    mkdir -p $root
    for f in .debs-mpi/*.deb; do dpkg -x "$f" $root; done
  fi
  mkdir -p $root/links # the names Debian's alternatives would make
  ln -sf $root/usr/bin/orterun $root/links/mpirun
  ln -sf $root/usr/bin/orterun $root/links/mpiexec
  ln -sf $root/usr/bin/mpicc.openmpi $root/links/mpicc
  export OPAL_PREFIX=$root/usr
  export PATH="$root/links:$root/usr/bin${PATH:+:$PATH}"
  lib=$root/usr/lib/x86_64-linux-gnu
  export LD_LIBRARY_PATH="$lib:$lib/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export CMAKE_PREFIX_PATH="$root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # FindMPI reads the wrapper; Debian's mpicc.openmpi finds its data relative to OPAL_PREFIX
  export MPI_HOME=$lib/openmpi
fi
