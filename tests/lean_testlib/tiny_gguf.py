"""Tiny GGUF language models written at test time with the ``gguf`` package (no download).

    tiny_model(template="chatml", qtype="Q8_0")   # cached path, 2 layers, hidden 64, ~300 tokens
    tiny_model(template="r1")                     # chat template opens <think> in the prompt
    qwen05b_shaped(qtype="Q8_0")                  # Qwen2.5-0.5B layer shapes, random weights (benchmark)
    write_model(path, ...)                        # write without the cache (byte-identity checks)
    write_unknown_arch(path)                      # a valid GGUF whose architecture llama.cpp does not know

Everything is seeded and written in a fixed order, so one set of arguments gives a byte-identical file
every time.  The vocabulary is a real byte-level BPE (GPT-2 byte map, merges learnt from a small built-in
corpus, llama.cpp ``gpt2`` tokenizer, ``qwen2`` pre-tokenizer) with the ChatML control tokens and
``<think>``/``</think>`` as user-defined tokens, exactly like Qwen / DeepSeek-R1-Distill files.
"""
import collections
import os
import pathlib
import re

import numpy as np

from . import cache_dir

GENERATOR_VERSION = 1

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# DeepSeek-R1-Distill style: the generation prompt already opens the reasoning block.
R1_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)
# ChatML that also takes OpenAI content parts (what llama_cpp's MTMDChatHandler passes: the image part turned into
# a text part holding the media marker), as Qwen2-VL's own template does.
CHATML_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEMPLATES = {"chatml": CHATML_TEMPLATE, "r1": R1_TEMPLATE, "chatml_vl": CHATML_VL_TEMPLATE, "none": None}

SPECIAL_TOKENS = [  # (text, llama.cpp token type): 3 = CONTROL, 4 = USER_DEFINED
    ("<|endoftext|>", 3),
    ("<|im_start|>", 3),
    ("<|im_end|>", 3),
    ("<think>", 4),
    ("</think>", 4),
]

CORPUS = """
a photo of a cat sitting on a wooden table, soft light, highly detailed, 8k, sharp focus
a portrait of a woman in a red dress, cinematic lighting, bokeh, masterpiece, best quality
a landscape with mountains and a lake at sunset, golden hour, dramatic clouds, wide angle
an old castle on a hill, fog, moody atmosphere, oil painting, trending on artstation
a futuristic city at night, neon lights, rain, cyberpunk, reflections on the street
a bowl of fruit on a kitchen counter, still life, natural light, photorealistic
the quick brown fox jumps over the lazy dog. The user wants a prompt for an image.
Okay, let me think about the style and the subject, then write the prompt in one line.
"""

_PRETOKENIZE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d| ?[^\s\w]+|\s+")


def bytes_to_unicode():
    """The GPT-2 byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_vocab(n_merges=200, pad_to=None, extra_special=()):
    """(tokens, token_types, merges, special ids) for a byte-level BPE learnt on CORPUS.  ``extra_special``:
    more (text, type) control tokens after SPECIAL_TOKENS (the vision model's <|vision_start|> ...)."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    words = collections.Counter(
        tuple(b2u[b] for b in piece.encode("utf-8")) for piece in _PRETOKENIZE.findall(CORPUS))
    merges = []
    known = set(tokens)
    for _ in range(n_merges):
        pairs = collections.Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]  # most frequent, ties by text
        merged = best[0] + best[1]
        merges.append(f"{best[0]} {best[1]}")
        if merged not in known:
            tokens.append(merged)
            known.add(merged)
        new_words = collections.Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += count
        words = new_words
    types = [1] * len(tokens)
    if pad_to:
        n_pad = pad_to - len(tokens) - len(SPECIAL_TOKENS)
        tokens += [f"[PAD{i}]" for i in range(n_pad)]
        types += [1] * n_pad
    ids = {}
    for text, ttype in list(SPECIAL_TOKENS) + list(extra_special):
        ids[text] = len(tokens)
        tokens.append(text)
        types.append(ttype)
    return tokens, types, merges, ids


def _quantize(arr, qtype):
    import gguf
    from gguf import quants
    qt = getattr(gguf.GGMLQuantizationType, qtype)
    if qt in (gguf.GGMLQuantizationType.F32,):
        return arr.astype(np.float32), None
    if qt == gguf.GGMLQuantizationType.F16:
        return arr.astype(np.float16), None
    return quants.quantize(arr.astype(np.float32), qt), qt


def write_model(path, *, arch="qwen2", template="chatml", qtype="Q8_0", seed=0, n_embd=64, n_layer=2,
                n_head=4, n_head_kv=2, n_ff=128, n_ctx_train=2048, vocab_pad_to=None, std=0.02,
                rope_theta=10000.0, arch_name=None, extra_special=(), rope_sections=None):
    """Write one random-weight GGUF model to `path` (deterministic for the same arguments)."""
    import gguf
    path = pathlib.Path(path)
    tokens, types, merges, ids = build_vocab(pad_to=vocab_pad_to, extra_special=extra_special)
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    w = gguf.GGUFWriter(str(tmp), arch_name or arch, use_temp_file=False)
    w.add_name(f"lean-tiny-{arch}-{template}-{qtype}")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(rope_theta)
    if rope_sections:
        w.add_rope_dimension_sections(list(rope_sections))
    w.add_file_type({"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
                     "F16": gguf.LlamaFileType.MOSTLY_F16, "F32": gguf.LlamaFileType.ALL_F32}[qtype])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ids["<|endoftext|>"])
    w.add_eos_token_id(ids["<|im_end|>"])
    w.add_pad_token_id(ids["<|endoftext|>"])
    w.add_add_bos_token(False)
    if TEMPLATES[template]:
        w.add_chat_template(TEMPLATES[template])

    head_dim = n_embd // n_head

    def rand(*shape, scale=std):
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)

    def add(name, arr, quantize=True):
        if quantize and arr.ndim == 2:
            data, qt = _quantize(arr, qtype)
            if qt is not None:
                w.add_tensor(name, data, raw_dtype=qt)
                return
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, arr.astype(np.float32))

    add("token_embd.weight", rand(n_vocab, n_embd))
    for i in range(n_layer):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", np.ones(n_embd, np.float32), quantize=False)
        add(p + "attn_q.weight", rand(n_head * head_dim, n_embd))
        add(p + "attn_k.weight", rand(n_head_kv * head_dim, n_embd))
        add(p + "attn_v.weight", rand(n_head_kv * head_dim, n_embd))
        if arch in ("qwen2", "qwen2vl"):
            add(p + "attn_q.bias", rand(n_head * head_dim), quantize=False)
            add(p + "attn_k.bias", rand(n_head_kv * head_dim), quantize=False)
            add(p + "attn_v.bias", rand(n_head_kv * head_dim), quantize=False)
        add(p + "attn_output.weight", rand(n_embd, n_head * head_dim))
        add(p + "ffn_norm.weight", np.ones(n_embd, np.float32), quantize=False)
        add(p + "ffn_gate.weight", rand(n_ff, n_embd))
        add(p + "ffn_up.weight", rand(n_ff, n_embd))
        add(p + "ffn_down.weight", rand(n_embd, n_ff))
    add("output_norm.weight", np.ones(n_embd, np.float32), quantize=False)
    # no output.weight: tied to token_embd, as in Qwen2.5-0.5B
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path


def _cached(name, **kw):
    d = cache_dir() / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    if not path.is_file():
        write_model(path, **kw)
    return path


def tiny_model(template="chatml", qtype="Q8_0", arch="qwen2", seed=0):
    """Path of the cached tiny model (2 layers, hidden 64)."""
    return _cached(f"lean_tiny_v{GENERATOR_VERSION}_{arch}_{template}_{qtype}_s{seed}.gguf",
                   arch=arch, template=template, qtype=qtype, seed=seed)


QWEN05B_SHAPES = dict(arch="qwen2", n_embd=896, n_layer=24, n_head=14, n_head_kv=2, n_ff=4864,
                      n_ctx_train=32768, vocab_pad_to=151936, rope_theta=1000000.0)


def qwen05b_shaped(qtype="Q8_0", seed=0):
    """Random weights with the layer shapes of Qwen2.5-0.5B-Instruct (24 layers, hidden 896, 14/2 heads,
    ffn 4864, vocabulary 151936, tied embeddings).  About 530 MB at Q8_0; written once and cached."""
    return _cached(f"lean_qwen05b_shaped_v{GENERATOR_VERSION}_{qtype}_s{seed}.gguf",
                   template="chatml", qtype=qtype, seed=seed, **QWEN05B_SHAPES)


def write_unknown_arch(path):
    """A well-formed GGUF whose general.architecture is one llama.cpp has never heard of."""
    return write_model(path, arch="llama", arch_name="lean_nonexistent_arch")
