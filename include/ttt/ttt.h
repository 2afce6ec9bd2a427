/* ttt: an engine for networks that keep learning while they run.
 * Umbrella header: tensors and memory (tensor.h), ops (ops.h), autodiff
 * (autodiff.h), optimizers (optim.h), test-time learners (layers.h). backend.h is for backend authors. */
#ifndef TTT_TTT_H
#define TTT_TTT_H
#include "ttt/autodiff.h"
#include "ttt/checkpoint.h"
#include "ttt/data.h"
#include "ttt/fileio.h"
#include "ttt/io.h"
#include "ttt/layers.h"
#include "ttt/lm.h"
#include "ttt/mttt.h"
#include "ttt/ops.h"
#include "ttt/shards.h"
#include "ttt/optim.h"
#include "ttt/runtime.h"
#include "ttt/tensor.h"
#include "ttt/train.h"
#endif
