#!/usr/bin/env bash
# Debian's Open MPI and the libraries it loads, as .deb files in .debs-mpi/ (git-ignored),
# for bench/dp/mpi_env.sh on a machine without Open MPI or a registry (the lent GPU machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .debs-mpi && cd .debs-mpi
apt-get download openmpi-bin openmpi-common libopenmpi3 libopenmpi-dev libhwloc15 libevent-core-2.1-7 \
  libevent-pthreads-2.1-7 libevent-2.1-7 libpmix2 libfabric1 libucx0 libibverbs1 librdmacm1 libnl-3-200 \
  libnl-route-3-200 libpsm-infinipath1 libpsm2-2 libnuma1 libmunge2 libxnvctrl0 libpciaccess0 libltdl7
du -sh .
