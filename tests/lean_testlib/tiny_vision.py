"""A tiny vision language model written at test time with the ``gguf`` package (no download): a Qwen2-VL-style
text model (llama.cpp architecture ``qwen2vl``, M-RoPE) and its projector (``mmproj``, projector type
``qwen2vl_merger``: a ViT with 14 px patches and a 2x2 patch merger), random weights, both loaded by llama.cpp's
``mtmd`` exactly like a real Qwen2-VL pair.

    text_model()            # cached path, 2 layers, hidden 64 (~300 tokens, ChatML that takes content parts)
    projector()             # cached path, the matching mmproj (1 ViT layer, hidden 32, projects to 64)
    projector(n_embd_out=96)  # a projector for a model with another hidden size (does not pair)
    tokens_for(w, h)        # the image tokens llama.cpp makes of a w x h image with this projector

Image tokens: Qwen2-VL's "smart resize" (llama.cpp clip.cpp, the reference processor's rule): each side rounded
to the nearest multiple of 28 (patch 14 x merge 2), then scaled down (floor) if the pixels exceed 4096 tokens'
worth or up (ceil) if under 8 tokens' worth; one token per 28 x 28 cell.
"""
import math
import os
import pathlib

import numpy as np

from . import cache_dir, tiny_gguf

GENERATOR_VERSION = 1
PATCH = 14
MERGE = 2
MIN_TOKENS, MAX_TOKENS = 8, 4096  # llama.cpp's limits for the Qwen-VL projectors
VISION_SPECIAL = [("<|vision_start|>", 3), ("<|vision_end|>", 3), ("<|image_pad|>", 3)]
TEXT_EMBD = 64


def tokens_for(width, height):
    """(tokens, grid_w, grid_h) for a width x height image: Qwen2-VL's smart resize, written from the reference
    processor's description (an independent statement of the rule, not llama.cpp's code)."""
    f = PATCH * MERGE
    h_bar = max(f, round(height / f) * f)
    w_bar = max(f, round(width / f) * f)
    max_px, min_px = MAX_TOKENS * f * f, MIN_TOKENS * f * f
    if h_bar * w_bar > max_px:
        beta = math.sqrt(height * width / max_px)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < min_px:
        beta = math.sqrt(min_px / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return (w_bar // f) * (h_bar // f), w_bar // f, h_bar // f


def write_projector(path, *, seed=1, n_embd=32, n_head=2, n_ff=64, n_layer=1, n_embd_out=TEXT_EMBD,
                    image_size=56):
    """Write the mmproj GGUF (deterministic for the same arguments)."""
    import gguf
    path = pathlib.Path(path)
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    w = gguf.GGUFWriter(str(tmp), "clip", use_temp_file=False)
    w.add_name("lean-tiny-qwen2vl-mmproj")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_clip_has_vision_encoder(True)
    w.add_clip_projector_type("qwen2vl_merger")
    w.add_vision_image_size(image_size)
    w.add_vision_patch_size(PATCH)
    w.add_vision_embedding_length(n_embd)
    w.add_vision_feed_forward_length(n_ff)
    w.add_vision_block_count(n_layer)
    w.add_vision_head_count(n_head)
    w.add_vision_attention_layernorm_eps(1e-6)
    w.add_vision_projection_dim(n_embd_out)
    w.add_vision_spatial_merge_size(MERGE)
    w.add_vision_image_mean([0.48145466, 0.4578275, 0.40821073])
    w.add_vision_image_std([0.26862954, 0.26130258, 0.27577711])

    def rand(*shape, scale):
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)

    # weights large enough that the picture moves the text model's logits (random 0.02 weights would not)
    w.add_tensor("v.patch_embd.weight", rand(n_embd, 3, PATCH, PATCH, scale=0.05))
    w.add_tensor("v.patch_embd.weight.1", rand(n_embd, 3, PATCH, PATCH, scale=0.05))
    for i in range(n_layer):
        p = f"v.blk.{i}."
        for t in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(p + t + ".weight", rand(n_embd, n_embd, scale=0.2))
            w.add_tensor(p + t + ".bias", rand(n_embd, scale=0.02))
        w.add_tensor(p + "ln1.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "ln1.bias", np.zeros(n_embd, np.float32))
        w.add_tensor(p + "ln2.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "ln2.bias", np.zeros(n_embd, np.float32))
        w.add_tensor(p + "ffn_up.weight", rand(n_ff, n_embd, scale=0.2))
        w.add_tensor(p + "ffn_up.bias", rand(n_ff, scale=0.02))
        w.add_tensor(p + "ffn_down.weight", rand(n_embd, n_ff, scale=0.2))
        w.add_tensor(p + "ffn_down.bias", rand(n_embd, scale=0.02))
    w.add_tensor("v.post_ln.weight", np.ones(n_embd, np.float32))
    w.add_tensor("v.post_ln.bias", np.zeros(n_embd, np.float32))
    w.add_tensor("mm.0.weight", rand(4 * n_embd, 4 * n_embd, scale=0.2))
    w.add_tensor("mm.0.bias", rand(4 * n_embd, scale=0.02))
    w.add_tensor("mm.2.weight", rand(n_embd_out, 4 * n_embd, scale=0.5))
    w.add_tensor("mm.2.bias", rand(n_embd_out, scale=0.02))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path


def _fixtures():
    d = cache_dir() / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def text_model(seed=0):
    """The Qwen2-VL-style text model (qwen2vl, 2 layers, hidden 64, M-RoPE sections 2/3/3/0 of 8)."""
    path = _fixtures() / f"lean_tiny_vl_v{GENERATOR_VERSION}_text_s{seed}.gguf"
    if not path.is_file():
        tiny_gguf.write_model(path, arch="qwen2vl", template="chatml_vl", qtype="F32", seed=seed,
                              n_embd=TEXT_EMBD, extra_special=VISION_SPECIAL, rope_sections=[2, 3, 3, 0])
    return path


def projector(seed=1, n_embd_out=TEXT_EMBD):
    path = _fixtures() / f"lean_tiny_vl_v{GENERATOR_VERSION}_mmproj_s{seed}_out{n_embd_out}.gguf"
    if not path.is_file():
        write_projector(path, seed=seed, n_embd_out=n_embd_out)
    return path


def mid_pair(seed=0):
    """A bigger pair for the benchmark: a Qwen2-VL text model with Qwen2.5-0.5B's layer shapes (24 layers, hidden
    896, 14/2 heads, Q8_0, ~500 MB) and a projector with an 8-layer, 640-wide ViT (F32, ~160 MB)."""
    text = _fixtures() / f"lean_mid_vl_v{GENERATOR_VERSION}_text_s{seed}.gguf"
    if not text.is_file():
        shapes = dict(tiny_gguf.QWEN05B_SHAPES, arch="qwen2vl")
        tiny_gguf.write_model(text, template="chatml_vl", qtype="Q8_0", seed=seed, extra_special=VISION_SPECIAL,
                              rope_sections=[8, 12, 12, 0], **shapes)
    proj = _fixtures() / f"lean_mid_vl_v{GENERATOR_VERSION}_mmproj_s{seed + 1}.gguf"
    if not proj.is_file():
        write_projector(proj, seed=seed + 1, n_embd=640, n_head=10, n_ff=2560, n_layer=8, n_embd_out=896)
    return text, proj


def raw_reference(pic, seed, max_tokens, system, text):
    """The same request through llama_cpp's own MTMDChatHandler: its template rendering, its PNG decoding
    (stb_image), its prompt and image evaluation and chat completion's sampler.  The text of the first
    ``max_tokens`` tokens it samples (the tokens are read off Llama.generate, because chat completion does not count
    a token that ends inside a UTF-8 character and its streamed text drops such characters)."""
    import base64
    import io

    import llama_cpp
    from llama_cpp.llama_chat_format import MTMDChatHandler
    from PIL import Image
    handler = MTMDChatHandler(clip_model_path=str(projector()), verbose=False)
    raw = llama_cpp.Llama(model_path=str(text_model()), n_ctx=1024, chat_handler=handler,
                          verbose=False)
    sampled = []
    generate = raw.generate

    def recording(*a, **k):
        for tok in generate(*a, **k):
            sampled.append(tok)
            yield tok

    raw.generate = recording
    try:
        buf = io.BytesIO()
        Image.fromarray(pic).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        msgs = [{"role": "system", "content": system},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": text}]}]
        raw.create_chat_completion(messages=msgs, seed=seed, max_tokens=max_tokens + 8, temperature=0.7, top_p=0.9,
                                   top_k=40, min_p=0.05, repeat_penalty=1.0)
        toks = []
        for tok in sampled[:max_tokens]:
            if llama_cpp.llama_vocab_is_eog(raw._model.vocab, tok):
                break
            toks.append(tok)
        return raw.detokenize(toks).decode("utf-8", errors="ignore")
    finally:
        raw.close()
