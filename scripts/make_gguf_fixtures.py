#!/usr/bin/env python3
"""Writes the GGUF / Hugging Face fixtures of tests/test_gguf.c and tests/test_llama.c
into tests/fixtures/gguf/ (committed; tests never run Python).

  quants.gguf        one tensor per ggml type ttt dequantizes (random blocks, sane scales)
                     and "<type>.ref": the gguf package's own dequantization (f32)
  tiny_tied.gguf     a random tiny Llama (GQA 4/2 heads, tied head, linear RoPE scaling x2),
                     matrices in Q8_0, with a BPE tokenizer trained here (SmolLM2's pre-tokenizer)
  tiny_untied.gguf   another (untied head, no scaling), matrices in F16
  tiny_untied_hf/    the same untied model as a Hugging Face folder (config.json,
                     model.safetensors f32, tokenizer.json, tokenizer_config.json)
  tiny_qwen2_hf/     a tiny Qwen2 (q/k/v biases, tied head) as a Hugging Face folder, bf16 safetensors
  tiny_mistral_hf/   a tiny Mistral (sliding window of 4 tokens, untied, llama3 RoPE scaling) likewise
  reference.gguf     what the C tests compare against: tokenizer cases (texts and the
                     `tokenizers` library's ids), input ids and the logits of both models
                     from transformers' LlamaForCausalLM in float64

Needs: gguf, numpy, torch, transformers, tokenizers, safetensors (pip, e.g. in /tmp/torchenv).
    /tmp/torchenv/bin/python scripts/make_gguf_fixtures.py
"""
import json
import os
import sys

import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as QT
from gguf.quants import quantize, dequantize
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from safetensors.torch import save_file as save_torch
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")
rng = np.random.default_rng(1234)

# ---- quantized tensors ----------------------------------------------------------------------------

# where each type keeps its f16 scales (byte offsets in a block)
SCALES = {QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q8_0: [0], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208]}


def write_quants():
    w = gguf.GGUFWriter(os.path.join(OUT, "quants.gguf"), arch="test")
    rows = 2
    for qt, offs in SCALES.items():
        blk, size = gguf.GGML_QUANT_SIZES[qt]
        n_blocks = rows * 256 // blk
        raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
        for o in offs:  # finite scales of either sign, some tiny (subnormal halves)
            s = rng.uniform(-1, 1, size=n_blocks).astype(np.float16)
            s[::7] = np.float16(3e-6)
            raw[:, o:o + 2] = s.view(np.uint8).reshape(n_blocks, 2)
        data = raw.reshape(rows, -1)
        ref = dequantize(data, qt).astype(np.float32)
        w.add_tensor(qt.name, data, raw_dtype=qt)
        w.add_tensor(qt.name + ".ref", ref)
    # F16 with its special values, BF16 with random bits, F32 as is
    f16 = rng.standard_normal(512).astype(np.float16)
    f16[:6] = np.array([0.0, -0.0, 6e-8, -3e-5, 65504, np.inf], dtype=np.float16)
    w.add_tensor("F16", f16.view(np.uint16).view(np.uint8).reshape(2, 512), raw_dtype=QT.F16)
    w.add_tensor("F16.ref", dequantize(f16.view(np.uint8).reshape(2, 512), QT.F16).astype(np.float32))
    bf = rng.integers(0, 1 << 16, size=512, dtype=np.uint16)
    bf[(bf & 0x7F80) == 0x7F80] = 0x3F80  # no inf / NaN
    w.add_tensor("BF16", bf.view(np.uint8).reshape(2, 512), raw_dtype=QT.BF16)
    w.add_tensor("BF16.ref", dequantize(bf.view(np.uint8).reshape(2, 512), QT.BF16).astype(np.float32))
    f32 = rng.standard_normal((2, 256)).astype(np.float32)
    w.add_tensor("F32", f32)
    w.add_tensor("F32.ref", f32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- tokenizer --------------------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CASES = [
    "Hello world",
    "  two  spaces,\ttabs\tand\nnewlines\n\n",
    "digits 12345 and 3.14159, year 2026!",
    "unicode: café naïve 日本語 Ελληνικά emoji 🙂",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "<|endoftext|>tail ' quotes 's 't 're ",
    "١٢٣ Arabic-Indic digits and Ⅻ roman",
    "gap  12 and   345 then 2026  ",
    "x 1  2   3\n 7",
]


def train_tokenizer():
    text = open(os.path.join(ROOT, "data", "tinyshakespeare", "input.txt"), encoding="utf-8").read()[:200000]
    # numbers and runs of spaces, so the vocabulary has merges ("12", " 1", "  ") that the
    # pre-tokenizer's digit splitting and whitespace rules must keep apart
    nums = " ".join(str(int(x)) for x in rng.integers(0, 3000, size=4000))
    text = text + "\n" + nums + "\n" + "gap  of   spaces    here\n" * 200
    tok = Tokenizer(models.BPE())
    # merges learned without splitting digits, then encoding with SmolLM2's pre-tokenizer
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=480, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tok


def tokenizer_parts(tok):
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    tokens = [None] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    types = [3 if t in SPECIALS else 1 for t in tokens]
    return tokens, merges, types


# ---- tiny Llama models ----------------------------------------------------------------------------

D, DEPTH, H, HKV, HD, F = 32, 2, 4, 2, 8, 64


# Llama 3's scaling, shrunk so that head_dim 8's four frequencies (wavelengths 6, 63, 628, 6283)
# fall in all three of its ranges: kept (< 64 / 4), blended, divided by 8 (> 64)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_theta": 10000.0}


def permute(w, heads):  # Hugging Face rows -> GGUF's (llama.cpp's rotary pairs)
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, heads):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_model(vocab, tied, scaling, store, arch="llama"):
    """Random weights; store(array HF-layout, gguf_name, heads_to_permute) returns
    (bytes to write or array, raw dtype, the exact HF-layout values the file holds)."""
    hf, gg = {}, []

    def mat(name, gname, shape, std, heads=0):
        w = (rng.standard_normal(shape) * std).astype(np.float32)
        data, qt, exact = store(w, heads)
        hf[name] = exact
        gg.append((gname, data, qt))

    def norm(name, gname, n):
        w = (1 + 0.2 * rng.standard_normal(n)).astype(np.float32)
        hf[name] = w
        gg.append((gname, w, None))

    mat("model.embed_tokens.weight", "token_embd.weight", (vocab, D), 0.5)
    for i in range(DEPTH):
        p, g = f"model.layers.{i}.", f"blk.{i}."
        norm(p + "input_layernorm.weight", g + "attn_norm.weight", D)
        mat(p + "self_attn.q_proj.weight", g + "attn_q.weight", (H * HD, D), 0.3, H)
        mat(p + "self_attn.k_proj.weight", g + "attn_k.weight", (HKV * HD, D), 0.3, HKV)
        mat(p + "self_attn.v_proj.weight", g + "attn_v.weight", (HKV * HD, D), 0.3)
        if arch == "qwen2":
            for n, rows in (("q", H * HD), ("k", HKV * HD), ("v", HKV * HD)):
                b = (0.3 * rng.standard_normal(rows)).astype(np.float32)
                hf[p + f"self_attn.{n}_proj.bias"] = store(b, 0)[2]
        mat(p + "self_attn.o_proj.weight", g + "attn_output.weight", (D, H * HD), 0.2)
        norm(p + "post_attention_layernorm.weight", g + "ffn_norm.weight", D)
        mat(p + "mlp.gate_proj.weight", g + "ffn_gate.weight", (F, D), 0.3)
        mat(p + "mlp.up_proj.weight", g + "ffn_up.weight", (F, D), 0.3)
        mat(p + "mlp.down_proj.weight", g + "ffn_down.weight", (D, F), 0.2)
    norm("model.norm.weight", "output_norm.weight", D)
    if not tied:
        mat("lm_head.weight", "output.weight", (vocab, D), 0.3)
    Config = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[arch]
    extra = {"sliding_window": 4} if arch == "mistral" else {"use_sliding_window": False} if arch == "qwen2" else {}
    cfg = Config(**extra, vocab_size=vocab, hidden_size=D, intermediate_size=F, num_hidden_layers=DEPTH,
                      num_attention_heads=H, num_key_value_heads=HKV, head_dim=HD, rms_norm_eps=1e-5,
                      max_position_embeddings=256, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2,
                      rope_parameters=({"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0} if scaling == "linear"
                                       else LLAMA3_ROPE if scaling == "llama3"
                                       else {"rope_type": "default", "rope_theta": 10000.0}))
    return cfg, hf, gg


def store_q8(w, heads):
    wp = permute(w, heads) if heads else w
    q = quantize(wp, QT.Q8_0)
    back = dequantize(q, QT.Q8_0).astype(np.float32)
    return q, QT.Q8_0, (unpermute(back, heads) if heads else back)


def store_f16(w, heads):
    h = w.astype(np.float16)
    exact = h.astype(np.float32)
    return (permute(h, heads) if heads else h), None, exact


def write_gguf(path, cfg, gg, tokens, merges, types, scaling):
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_block_count(DEPTH)
    w.add_context_length(256)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    w.add_rope_dimension_count(HD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    if scaling:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(2.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, data, qt in gg:
        if qt is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def store_bf16(w, heads):  # Hugging Face folders only: no GGUF layout, heads unused
    exact = torch.from_numpy(w).to(torch.bfloat16).float().numpy()
    return None, None, exact


def logits_of(cfg, hf, ids):
    torch.manual_seed(0)
    Model = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "mistral": MistralForCausalLM}[cfg.model_type]
    model = Model(cfg).double().eval()
    sd = {k: torch.from_numpy(v.astype(np.float64)) for k, v in hf.items()}
    if cfg.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def main():
    os.makedirs(OUT, exist_ok=True)
    write_quants()
    tok = train_tokenizer()
    tokens, merges, types = tokenizer_parts(tok)
    V = len(tokens)
    ids = [int(i) for i in rng.integers(0, V, size=12)]

    cfg_t, hf_t, gg_t = make_model(V, tied=True, scaling="linear", store=store_q8)
    write_gguf(os.path.join(OUT, "tiny_tied.gguf"), cfg_t, gg_t, tokens, merges, types, scaling=True)
    cfg_u, hf_u, gg_u = make_model(V, tied=False, scaling=None, store=store_f16)
    write_gguf(os.path.join(OUT, "tiny_untied.gguf"), cfg_u, gg_u, tokens, merges, types, scaling=False)

    hfdir = os.path.join(OUT, "tiny_untied_hf")
    os.makedirs(hfdir, exist_ok=True)
    cfg_u.save_pretrained(hfdir)
    save_file({k: np.ascontiguousarray(v) for k, v in hf_u.items()}, os.path.join(hfdir, "model.safetensors"))
    tok.save(os.path.join(hfdir, "tokenizer.json"))
    with open(os.path.join(hfdir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
                   "chat_template": CHAT_TEMPLATE}, f, indent=1)
    for extra in ("generation_config.json",):
        p = os.path.join(hfdir, extra)
        if os.path.exists(p):
            os.remove(p)

    others = {}
    for arch, tied, scaling in (("qwen2", True, None), ("mistral", False, "llama3")):
        cfg, hf, _ = make_model(V, tied=tied, scaling=scaling, store=store_bf16, arch=arch)
        hf = {k: store_bf16(v, 0)[2] for k, v in hf.items()}  # the norm gains too: the file holds bf16
        d = os.path.join(OUT, f"tiny_{arch}_hf")
        os.makedirs(d, exist_ok=True)
        cfg.save_pretrained(d)
        save_torch({k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16) for k, v in hf.items()},
                   os.path.join(d, "model.safetensors"))
        tok.save(os.path.join(d, "tokenizer.json"))
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
                       "chat_template": CHAT_TEMPLATE}, f, indent=1)
        p = os.path.join(d, "generation_config.json")
        if os.path.exists(p):
            os.remove(p)
        others[arch] = logits_of(cfg, hf, ids)

    r = gguf.GGUFWriter(os.path.join(OUT, "reference.gguf"), arch="reference")
    r.add_uint32("case.count", len(CASES))
    for i, text in enumerate(CASES):
        r.add_string(f"case.{i}.text", text)
        r.add_array(f"case.{i}.ids", [int(x) for x in tok.encode(text).ids])
    chat = ("<|im_start|>system\nYou are a tiny test model<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
            "<|im_start|>assistant\n")
    r.add_string("chat.user", "Hi there")
    r.add_string("chat.rendered", chat)
    r.add_tensor("ids", np.array(ids, dtype=np.int32))
    r.add_tensor("logits.tied", logits_of(cfg_t, hf_t, ids).astype(np.float32))
    r.add_tensor("logits.untied", logits_of(cfg_u, hf_u, ids).astype(np.float32))
    for arch, lg in others.items():
        r.add_tensor(f"logits.{arch}", lg.astype(np.float32))
    r.write_header_to_file()
    r.write_kv_data_to_file()
    r.write_tensors_to_file()
    r.close()
    total = 0
    for dp, _, fs in os.walk(OUT):
        for f in fs:
            total += os.path.getsize(os.path.join(dp, f))
    print(f"fixtures in {OUT}: {total / 1024:.0f} KiB, vocab {V}, {len(merges)} merges")


if __name__ == "__main__":
    sys.exit(main())
