/* ttt: an engine for networks that keep learning while they run.
 * Umbrella header: every public header of the library. backend.h is left out
 * on purpose: it is the interface for backend authors, not for users (the
 * runtime API in runtime.h is what programs need about devices).
 * tests/test_umbrella.c fails when a header in include/ttt is missing here. */
#ifndef TTT_TTT_H
#define TTT_TTT_H
#include "ttt/adapter.h"
#include "ttt/autodiff.h"
#include "ttt/checkpoint.h"
#include "ttt/data.h"
#include "ttt/dist.h"
#include "ttt/fileio.h"
#include "ttt/gradcheck.h"
#include "ttt/gguf.h"
#include "ttt/graph.h"
#include "ttt/io.h"
#include "ttt/layers.h"
#include "ttt/llama.h"
#include "ttt/lm.h"
#include "ttt/mixers.h"
#include "ttt/mttt.h"
#include "ttt/ops.h"
#include "ttt/optim.h"
#include "ttt/runtime.h"
#include "ttt/shards.h"
#include "ttt/tasks.h"
#include "ttt/tensor.h"
#include "ttt/train.h"
#include "ttt/tokenizer.h"
#include "ttt/ttt_rnn.h"
#include "ttt/vit.h"
#endif
