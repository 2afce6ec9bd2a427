# Sourced on the GPU machine before anything runs with TTT_CUDNN (docs/cudnn.md): prints where cuDNN is (the CUDA
# toolkit's headers and libraries, PyTorch's cuDNN, the nvidia.cudnn pip package, headers carried in .deps/cudnn),
# sets TTT_CUDNN_LIB to the pip package's lib folder where the toolkit has no libcudnn.so.9 (our binary opens
# libcudnn by path; the toolkit's own first, so one release's sub-libraries are never mixed with another's), and
# puts NVRTC (the toolkit's, or the pip wheel's: cuDNN's runtime-compiled engines need it) on LD_LIBRARY_PATH.
echo "== cuDNN on this machine =="
ls /usr/local/cuda/include/cudnn_graph.h 2>/dev/null || echo "no cudnn_graph.h in /usr/local/cuda/include"
ls /usr/local/cuda/lib64/libcudnn.so.9 2>/dev/null || true
[ -e .deps/cudnn/include/cudnn_graph.h ] && echo "carried headers: $(grep -m1 -E 'define CUDNN_MINOR' .deps/cudnn/include/cudnn_version.h)"
ldconfig -p 2>/dev/null | grep -E "libcudnn(_graph)?\.so\.9" | head -3
python3 -c "import torch; print('torch', torch.__version__, 'cuDNN', torch.backends.cudnn.version())" 2>&1 | tail -1
cudnn_pydir=$(python3 -c "import nvidia.cudnn as m; print(list(m.__path__)[0])" 2>/dev/null)
if [ -n "$cudnn_pydir" ]; then
  echo "nvidia.cudnn package: $cudnn_pydir"
  ls "$cudnn_pydir/include/cudnn_graph.h" "$cudnn_pydir"/lib/libcudnn.so.9 2>/dev/null | head -4
  if [ -z "${TTT_CUDNN_LIB:-}" ] && [ ! -e /usr/local/cuda/lib64/libcudnn.so.9 ] && [ -e "$cudnn_pydir/lib/libcudnn.so.9" ]; then
    export TTT_CUDNN_LIB="$cudnn_pydir/lib"
  fi
else
  echo "no nvidia.cudnn Python package"
fi
cudnn_nvrtc=$(python3 -c "import nvidia.cuda_nvrtc as m; print(list(m.__path__)[0] + '/lib')" 2>/dev/null)
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${cudnn_nvrtc:+:$cudnn_nvrtc}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "TTT_CUDNN_LIB=${TTT_CUDNN_LIB:-(unset: the dynamic loader path)}"
