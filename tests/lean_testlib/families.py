"""Tiny fixtures (random weights) of the 2026 model families ComfyUI 0.33 runs: Z-Image (Lumina2 DiT), Flux.2 Klein
and Qwen-Image, and their text encoders (Qwen3-4B, Qwen2.5-VL-7B), with the key names of the published files
(Comfy-Org's repackaged ``z_image_turbo_bf16.safetensors``, ``flux-2-klein-4b.safetensors``,
``qwen_image_bf16.safetensors``, ``qwen_3_4b.safetensors``, ``qwen_2.5_vl_7b.safetensors``) and as few blocks as
the host's detection allows.  Written from those layouts, not from the host's classes; cached under
``~/.cache/lean-nodes/fixtures`` and generated on first use (atomic by rename), never committed.

How small each can be is set by the host (ComfyUI 0.33.0, comfy/model_detection.py + comfy/supported_models.py
+ comfy/sd.py detect_te_model):
  * Z-Image: detected as Z-Image only at dim 3840 (the host then fixes 30 heads, FFN 10240); the two noise and two
    context refiner blocks are fixed; only ``n_layers`` (1 here) and the caption width (cap_embedder: 2560, the
    Qwen3-4B width) come from the file.  ~0.91 B parameters, 1.8 GB in bf16.
  * Flux.2 Klein: hidden size read from img_in (256 here: two heads of 128), text width from txt_in (3 x 2560:
    Klein stacks Qwen3-4B layers 9, 18, 27), one double and one single block.  ~6 M parameters.
  * Qwen-Image: the host fixes 24 heads of 128 (3072) and the text width 3584 (Qwen2.5-VL-7B); one block.
    ~0.38 B parameters.
  * Qwen3-4B: detected by its width (2560) with q/k norms; the host builds 36 layers, 32 heads, FFN 9728 unless
    told otherwise (tiny_te_node.py, test-only, tells it TINY_QWEN3); 28 layers here (Klein reads layer 27), one
    head (and one KV head) of 128, FFN 64.  The vocabulary (151936 x 2560) is most of it: ~0.44 B, 0.88 GB.
  * Qwen2.5-VL-7B: detected by k_proj's bias of 512 (4 KV heads of 128); width 3584 (Qwen-Image's text width);
    one layer, four heads, FFN 64; the vision tower is left out (text-to-image never runs it; the host logs it as
    missing).  ~0.55 B, 1.1 GB.

  * Flux.2-dev: the Klein DiT above with dev's text width (3 x 5120) and its guidance embedding.
  * Mistral Small 3.x (Flux.2-dev's encoder): detected by its width (5120) without q/k norms, 40 layers (Flux.2
    reads 10, 20, 30); one head of 128, FFN 64 and a 512-token vocabulary (tiny_te_node.py tells the host); the
    tekken tokenizer JSON in the file as ``tekken_model`` (uint8), with a stand-in vocabulary (tekken_json()).
    ~0.15 B parameters, 0.29 GB.
  * The Qwen-Image VAE (Wan 2.1): full size (ComfyUI 0.3.64 fixes its width), ~127 M parameters, 254 MB.

    zimage_tiny(), flux2_tiny(), flux2_dev_tiny(), qwen_image_tiny(), qwen3_4b_tiny(), qwen25_7b_tiny(),
    mistral3_24b_tiny(), qwen_image_vae() -> path
"""
import os

GENERATOR_VERSION = 1
TINY_QWEN3 = {"num_hidden_layers": 28, "num_attention_heads": 1, "num_key_value_heads": 1, "intermediate_size": 64}
TINY_QWEN25 = {"num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 64}
TINY_MISTRAL3 = {"num_attention_heads": 1, "num_key_value_heads": 1, "intermediate_size": 64, "vocab_size": 512}
MISTRAL3_LAYERS = 40  # Mistral Small 3.x (what Comfy-Org ships for Flux.2-dev): Flux.2 reads layers 10, 20 and 30
HEAD = 128


def _block_lumina(keys, p, dim, ffn, modulation):
    keys[p + "attention.qkv.weight"] = (3 * dim, dim)
    keys[p + "attention.out.weight"] = (dim, dim)
    keys[p + "attention.q_norm.weight"] = (HEAD,)
    keys[p + "attention.k_norm.weight"] = (HEAD,)
    keys[p + "feed_forward.w1.weight"] = (ffn, dim)
    keys[p + "feed_forward.w2.weight"] = (dim, ffn)
    keys[p + "feed_forward.w3.weight"] = (ffn, dim)
    for n in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2"):
        keys[f"{p}{n}.weight"] = (dim,)
    if modulation:
        keys[p + "adaLN_modulation.0.weight"] = (4 * dim, 256)
        keys[p + "adaLN_modulation.0.bias"] = (4 * dim,)


def zimage_keys(n_layers=1, cap_feat_dim=2560, dim=3840, ffn=10240, refiners=2):
    keys = {"x_pad_token": (1, dim), "cap_pad_token": (1, dim),
            "x_embedder.weight": (dim, 64), "x_embedder.bias": (dim,),
            "t_embedder.mlp.0.weight": (1024, 256), "t_embedder.mlp.0.bias": (1024,),
            "t_embedder.mlp.2.weight": (256, 1024), "t_embedder.mlp.2.bias": (256,),
            "cap_embedder.0.weight": (cap_feat_dim,), "cap_embedder.1.weight": (dim, cap_feat_dim),
            "cap_embedder.1.bias": (dim,)}
    for i in range(refiners):
        _block_lumina(keys, f"noise_refiner.{i}.", dim, ffn, True)
    for i in range(refiners):
        _block_lumina(keys, f"context_refiner.{i}.", dim, ffn, False)
    for i in range(n_layers):
        _block_lumina(keys, f"layers.{i}.", dim, ffn, True)
    keys.update({"final_layer.linear.weight": (64, dim), "final_layer.linear.bias": (64,),
                 "final_layer.adaLN_modulation.1.weight": (dim, 256), "final_layer.adaLN_modulation.1.bias": (dim,)})
    return keys


def flux2_keys(hidden_size=256, depth=1, depth_single=1, context_in_dim=3 * 2560, in_channels=128, mlp_ratio=3):
    h, m = hidden_size, hidden_size * mlp_ratio
    keys = {"img_in.weight": (h, in_channels), "time_in.in_layer.weight": (h, 256),
            "time_in.out_layer.weight": (h, h), "txt_in.weight": (h, context_in_dim)}
    for i in range(depth):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}_"
            keys[p + "attn.qkv.weight"] = (3 * h, h)
            keys[p + "attn.norm.query_norm.weight"] = (HEAD,)
            keys[p + "attn.norm.key_norm.weight"] = (HEAD,)
            keys[p + "attn.proj.weight"] = (h, h)
            keys[p + "mlp.0.weight"] = (2 * m, h)  # SiLU-gated: gate and value in one matrix
            keys[p + "mlp.2.weight"] = (h, m)
    for i in range(depth_single):
        p = f"single_blocks.{i}."
        keys[p + "linear1.weight"] = (3 * h + 2 * m, h)
        keys[p + "linear2.weight"] = (h, h + m)
        keys[p + "norm.query_norm.weight"] = (HEAD,)
        keys[p + "norm.key_norm.weight"] = (HEAD,)
    keys["final_layer.linear.weight"] = (in_channels, h)
    keys["final_layer.adaLN_modulation.1.weight"] = (2 * h, h)
    keys["double_stream_modulation_img.lin.weight"] = (6 * h, h)
    keys["double_stream_modulation_txt.lin.weight"] = (6 * h, h)
    keys["single_stream_modulation.lin.weight"] = (3 * h, h)
    return keys


def qwen_image_keys(num_layers=1, inner=3072, text_dim=3584, in_channels=64):
    h = inner
    keys = {"time_text_embed.timestep_embedder.linear_1.weight": (h, 256),
            "time_text_embed.timestep_embedder.linear_1.bias": (h,),
            "time_text_embed.timestep_embedder.linear_2.weight": (h, h),
            "time_text_embed.timestep_embedder.linear_2.bias": (h,),
            "txt_norm.weight": (text_dim,), "img_in.weight": (h, in_channels), "img_in.bias": (h,),
            "txt_in.weight": (h, text_dim), "txt_in.bias": (h,)}
    for i in range(num_layers):
        p = f"transformer_blocks.{i}."
        for s in ("img", "txt"):
            keys[f"{p}{s}_mod.1.weight"], keys[f"{p}{s}_mod.1.bias"] = (6 * h, h), (6 * h,)
            keys[f"{p}{s}_mlp.net.0.proj.weight"], keys[f"{p}{s}_mlp.net.0.proj.bias"] = (4 * h, h), (4 * h,)
            keys[f"{p}{s}_mlp.net.2.weight"], keys[f"{p}{s}_mlp.net.2.bias"] = (h, 4 * h), (h,)
        for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            keys[f"{p}attn.{n}.weight"] = (HEAD,)
        for n in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            keys[f"{p}attn.{n}.weight"], keys[f"{p}attn.{n}.bias"] = (h, h), (h,)
    keys.update({"norm_out.linear.weight": (2 * h, h), "norm_out.linear.bias": (2 * h,),
                 "proj_out.weight": (in_channels, h), "proj_out.bias": (in_channels,)})
    return keys


def qwen_llm_keys(hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size,
                  vocab_size, qk_norm, qkv_bias):
    """HF Qwen2/Qwen3 ``model.*`` keys (embed_tokens, layers.N.{self_attn,mlp,norms}, norm); no lm_head (the
    text-encoder files ComfyUI ships have none)."""
    h, q, kv = hidden_size, num_attention_heads * HEAD, num_key_value_heads * HEAD
    keys = {"model.embed_tokens.weight": (vocab_size, h)}
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}."
        for n, o in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            keys[f"{p}self_attn.{n}.weight"] = (o, h)
            if qkv_bias:
                keys[f"{p}self_attn.{n}.bias"] = (o,)
        keys[p + "self_attn.o_proj.weight"] = (h, q)
        if qk_norm:
            keys[p + "self_attn.q_norm.weight"] = (HEAD,)
            keys[p + "self_attn.k_norm.weight"] = (HEAD,)
        keys[p + "mlp.gate_proj.weight"] = (intermediate_size, h)
        keys[p + "mlp.up_proj.weight"] = (intermediate_size, h)
        keys[p + "mlp.down_proj.weight"] = (h, intermediate_size)
        keys[p + "input_layernorm.weight"] = (h,)
        keys[p + "post_attention_layernorm.weight"] = (h,)
    keys["model.norm.weight"] = (h,)
    return keys


def qwen3_4b_keys(**cfg):
    c = {**TINY_QWEN3, **cfg}
    return qwen_llm_keys(2560, c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"],
                         c["intermediate_size"], 151936, qk_norm=True, qkv_bias=False)


def qwen25_7b_keys(**cfg):
    c = {**TINY_QWEN25, **cfg}
    return qwen_llm_keys(3584, c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"],
                         c["intermediate_size"], 152064, qk_norm=False, qkv_bias=True)


def mistral3_24b_keys(**cfg):
    """Mistral Small 3.x (Flux.2-dev's text encoder) as HF ``model.*`` keys: width 5120 (the host's detection), 40
    layers, no q/k norms, no biases, the final norm; heads, FFN and vocabulary from TINY_MISTRAL3."""
    c = {**TINY_MISTRAL3, **cfg}
    return qwen_llm_keys(5120, MISTRAL3_LAYERS, c["num_attention_heads"], c["num_key_value_heads"],
                         c["intermediate_size"], c["vocab_size"], qk_norm=False, qkv_bias=False)


# Mistral's tekken tokenizer as Comfy-Org's Flux.2 text-encoder files carry it: the tekken JSON as a uint8 tensor
# ``tekken_model`` (comfy/sd.py hands it to comfy/text_encoders/flux.py's Mistral3Tokenizer, which parses it with the
# host's own comfy/text_encoders/bpe_tokenizer.from_tekken_json).  The real vocabulary (131072 tokens) cannot be had
# offline; this one has Mistral's first 20 special tokens at their ranks (<s> = 1, <pad> = 11, [INST] = 3,
# [SYSTEM_PROMPT] = 17, ...), the 256 bytes and a few merges, so the host's BPE merges run too.
MISTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
                    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"]
MISTRAL_MERGES = ["th", "he", "the", " t", " the", "in", "on", "er", "an", " a", "ig", "ht", "ight", "li", "light",
                  "ro", "ck", "rock", " on", "ing"]


def tekken_json():
    import base64
    import json
    vocab = [bytes([b]) for b in range(256)] + [m.encode() for m in MISTRAL_MERGES]
    n_special = len(MISTRAL_SPECIALS)
    assert n_special + len(vocab) <= TINY_MISTRAL3["vocab_size"]
    return json.dumps({
        "config": {"pattern": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
                              r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
                              r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
                   "num_vocab_tokens": len(vocab), "default_vocab_size": n_special + len(vocab),
                   "default_num_special_tokens": n_special, "version": "v7"},
        "vocab": [{"rank": r, "token_bytes": base64.b64encode(t).decode(), "token_str": t.decode("latin-1")}
                  for r, t in enumerate(vocab)],
        "special_tokens": [{"rank": r, "token_str": t, "is_control": True} for r, t in enumerate(MISTRAL_SPECIALS)],
    }).encode()


def _values(key, shape, g):
    import torch
    last = key.rsplit(".", 1)[-1]
    if last == "gamma":  # the Wan VAE's RMS norms
        return torch.ones(shape)
    if len(shape) >= 3:  # convolutions (the Wan VAE): N(0, 1/fan_in) over in-channels x kernel
        fan_in = 1
        for n in shape[1:]:
            fan_in *= n
        return torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
    if len(shape) == 1 and ("norm" in key or last == "scale" or key.endswith("cap_embedder.0.weight")):
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    if last == "bias" or len(shape) == 1:
        return 0.02 * torch.randn(shape, generator=g)
    if "embed_tokens" in key or "pad_token" in key:
        return torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g) * (1.0 / shape[-1]) ** 0.5


def _write(name, keys, seed, cache=None, dtype="bfloat16", metadata=None, extra=None):
    import torch
    from safetensors.torch import save_file
    from . import cache_dir
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}_v{GENERATOR_VERSION}_seed{seed}.safetensors"
    if path.exists():
        return path
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    sd = {}
    for k, shape in keys.items():
        t = _values(k, shape, g)
        sd[k] = t.to(dt)
        del t
    sd.update(extra or {})
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata={"lean_fixture": f"{name} v{GENERATOR_VERSION} seed {seed}", **(metadata or {})})
    os.replace(tmp, path)
    return path


def wan21_vae_keys(dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temporal_down=(False, True, True)):
    """The Wan 2.1 VAE (Qwen-Image's VAE, Comfy-Org's ``qwen_image_vae.safetensors``): causal 3D convolutions,
    RMS norms (``gamma``), one attention block in each middle; ComfyUI 0.3.64 fixes dim 96, so this is full size
    (~127 M parameters, 254 MB in bf16)."""
    keys = {}

    def conv(p, cout, cin, k):
        keys[p + ".weight"] = (cout, cin, *k)
        keys[p + ".bias"] = (cout,)

    def res(p, cin, cout):
        keys[p + ".residual.0.gamma"] = (cin, 1, 1, 1)
        conv(p + ".residual.2", cout, cin, (3, 3, 3))
        keys[p + ".residual.3.gamma"] = (cout, 1, 1, 1)
        conv(p + ".residual.6", cout, cout, (3, 3, 3))
        if cin != cout:
            conv(p + ".shortcut", cout, cin, (1, 1, 1))

    def attn(p, c):
        keys[p + ".norm.gamma"] = (c, 1, 1)
        conv(p + ".to_qkv", 3 * c, c, (1, 1))
        conv(p + ".proj", c, c, (1, 1))

    def middle(p, c):
        res(p + ".0", c, c)
        attn(p + ".1", c)
        res(p + ".2", c, c)

    dims = [dim * u for u in (1, *dim_mult)]
    conv("encoder.conv1", dims[0], 3, (3, 3, 3))
    i = 0
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(num_res_blocks):
            res(f"encoder.downsamples.{i}", cin, cout)
            cin, i = cout, i + 1
        if level != len(dim_mult) - 1:
            conv(f"encoder.downsamples.{i}.resample.1", cout, cout, (3, 3))
            if temporal_down[level]:
                conv(f"encoder.downsamples.{i}.time_conv", cout, cout, (3, 1, 1))
            i += 1
    middle("encoder.middle", dims[-1])
    keys["encoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
    conv("encoder.head.2", 2 * z_dim, dims[-1], (3, 3, 3))
    conv("conv1", 2 * z_dim, 2 * z_dim, (1, 1, 1))
    conv("conv2", z_dim, z_dim, (1, 1, 1))
    dims = [dim * u for u in (dim_mult[-1], *dim_mult[::-1])]
    temporal_up = temporal_down[::-1]
    conv("decoder.conv1", dims[0], z_dim, (3, 3, 3))
    middle("decoder.middle", dims[0])
    i = 0
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        if level in (1, 2, 3):
            cin //= 2
        for _ in range(num_res_blocks + 1):
            res(f"decoder.upsamples.{i}", cin, cout)
            cin, i = cout, i + 1
        if level != len(dim_mult) - 1:
            conv(f"decoder.upsamples.{i}.resample.1", cout // 2, cout, (3, 3))
            if temporal_up[level]:
                conv(f"decoder.upsamples.{i}.time_conv", cout * 2, cout, (3, 1, 1))
            i += 1
    keys["decoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
    conv("decoder.head.2", 3, dims[-1], (3, 3, 3))
    return keys


def qwen_image_vae(seed=0, cache=None):
    return _write("qwen_image_vae_wan21", wan21_vae_keys(), seed, cache)


def zimage_tiny(seed=0, cache=None):
    return _write("zimage_tiny_l1", zimage_keys(), seed, cache)


def flux2_tiny(seed=0, cache=None):
    return _write("flux2_klein_tiny_h256", flux2_keys(), seed, cache)


def flux2_dev_tiny(seed=0, cache=None):
    """Flux.2-dev's DiT as the tiny Klein above with dev's text width (3 x 5120: Mistral layers 10, 20, 30) and its
    guidance embedding (``guidance_in``, which the host's detection reads)."""
    keys = flux2_keys(context_in_dim=3 * 5120)
    keys.update({"guidance_in.in_layer.weight": (256, 256), "guidance_in.out_layer.weight": (256, 256)})
    return _write("flux2_dev_tiny_h256", keys, seed, cache)


def mistral3_24b_tiny(seed=0, cache=None):
    """The tiny Mistral Small 3.x with its tekken tokenizer in the file (``tekken_model``, as Comfy-Org ships it)."""
    import torch
    blob = torch.frombuffer(bytearray(tekken_json()), dtype=torch.uint8)
    return _write("mistral3_24b_tiny_l40", mistral3_24b_keys(), seed, cache, extra={"tekken_model": blob})


def qwen_image_tiny(seed=0, cache=None):
    return _write("qwen_image_tiny_l1", qwen_image_keys(), seed, cache)


def qwen3_4b_tiny(seed=0, cache=None):
    return _write("qwen3_4b_tiny_l28", qwen3_4b_keys(), seed, cache)


def qwen25_7b_tiny(seed=0, cache=None):
    return _write("qwen25_7b_tiny_l1", qwen25_7b_keys(), seed, cache)


# the skip reason where ComfyUI 0.3.64 lacks a family (one text: tests/conftest.py's allow-list matches its start)
MISSING_064 = {"zimage": "Z-Image: not in ComfyUI 0.3.64 (no ZImage model, no Qwen3-4B text encoder)",
               "flux2": "Flux.2 Klein: not in ComfyUI 0.3.64 (no Flux2 model, no flux2 text-encoder type)",
               "flux2_dev": "Flux.2-dev: not in ComfyUI 0.3.64 (no Flux2 model, no Mistral Small 3.x encoder)"}


def sd15_clip_l(seed=0, cache=None):
    """SD1.5's CLIP-L as a standalone text-encoder file (HF CLIPTextModel keys ``text_model.*``, fp16, ~246 MB):
    the same tensors as the text encoder of ``sd15.sd15_checkpoint(seed)``, what a Load CLIP user has in
    models/text_encoders."""
    from safetensors.torch import save_file
    from . import cache_dir, sd15
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"sd15_clip_l_v{GENERATOR_VERSION}_seed{seed}.safetensors"
    if path.exists():
        return path
    prefix = "cond_stage_model.transformer."
    sd = {k[len(prefix):]: v for k, v in sd15.make_sd15_state_dict(seed, parts=("clip",)).items()
          if k.startswith(prefix)}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp),
              metadata={"lean_fixture": f"sd15 clip-l v{GENERATOR_VERSION} seed {seed}"})
    os.replace(tmp, path)
    return path


QWEN3_4B_FULL = {"num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "intermediate_size": 9728}  # Qwen3-4B's own config (4.02 B parameters, 8.04 GB in bf16)


def write_streamed(path, keys, seed=0, metadata=None, chunk=1 << 25):
    """Write a bf16 safetensors file of ``keys`` ({key: shape}) tensor by tensor in chunks of at most ``chunk``
    elements, the header computed first (no state dict is ever held: peak memory ~ one chunk); values as
    ``_values`` gives them, from one seeded generator per tensor (deterministic).  Returns the data bytes."""
    import json
    import math
    import struct
    import torch
    head, off = {"__metadata__": metadata or {}}, 0
    for k, shape in keys.items():
        n = math.prod(shape) * 2
        head[k] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(head, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for i, (k, shape) in enumerate(keys.items()):
                g = torch.Generator().manual_seed(seed * 1_000_003 + i)
                rows = max(1, chunk // max(1, math.prod(shape[1:])))
                done = 0
                while done < shape[0]:
                    m = min(rows, shape[0] - done)
                    t = _values(k, (m,) + tuple(shape[1:]), g).to(torch.bfloat16)
                    f.write(t.view(torch.int16).numpy().tobytes())
                    del t
                    done += m
        if os.path.getsize(tmp) != 8 + len(raw) + off:
            raise AssertionError(f"{tmp}: size {os.path.getsize(tmp)} != {8 + len(raw) + off}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return off


def qwen3_4b_full_path(seed=0, cache=None):
    from . import cache_dir
    return (cache or cache_dir()) / "fixtures" / f"qwen3_4b_full_bf16_v{GENERATOR_VERSION}_seed{seed}.safetensors"


def qwen3_4b_full(seed=0, cache=None):
    """Path of a full-size Qwen3-4B-shaped bf16 text encoder (random weights, 8.04 GB; the benchmark's file,
    made on demand: bench/te_load.py --remove-file deletes it)."""
    path = qwen3_4b_full_path(seed, cache)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_streamed(path, qwen3_4b_keys(**QWEN3_4B_FULL), seed,
                       {"lean_fixture": f"qwen3_4b_full v{GENERATOR_VERSION} seed {seed}"})
    return path


# ------------------------------------------------------------------ LoRAs in the namings trainers write
def _lora_modules(family, native=False):
    """(LoRA module name in the family's diffusers naming, (out, in)) for the linear layers a trainer targets;
    native: ComfyUI's own module names instead (Z-Image's fused attention.qkv and attention.out; the others' are
    the diffusers names already)."""
    out = []
    if family == "qwen_image":
        for k, shape in qwen_image_keys().items():
            if k.startswith("transformer_blocks.") and k.endswith(".weight") and len(shape) == 2:
                out.append((k[:-len(".weight")], shape))
    elif family == "zimage":
        dim = 3840
        for k, shape in zimage_keys().items():
            if not (k.startswith(("layers.", "noise_refiner.", "context_refiner.")) and k.endswith(".weight")
                    and len(shape) == 2):
                continue
            base = k[:-len(".weight")]
            if native:
                out.append((base, shape))
            elif base.endswith(".attention.qkv"):  # diffusers' Z-Image splits qkv into to_q/to_k/to_v
                stem = base[:-len("qkv")]
                out += [(stem + n, (dim, dim)) for n in ("to_q", "to_k", "to_v")]
            elif base.endswith(".attention.out"):
                out.append((base[:-len("out")] + "to_out.0", shape))
            else:
                out.append((base, shape))
    elif family == "flux2":
        for k, shape in flux2_keys().items():
            if k.startswith(("double_blocks.", "single_blocks.")) and k.endswith(".weight") and len(shape) == 2:
                out.append((k[:-len(".weight")], shape))
    return out


LORA_NAMINGS = {
    # the host's own diffusers/PEFT form (what ai-toolkit writes for Qwen-Image and Z-Image): transformer.<module>
    "peft": ("transformer.{}", ".lora_A.weight", ".lora_B.weight", False),
    # DiffSynth-Studio (Qwen-Image): bare module names, PEFT's adapter name "default"
    "diffsynth": ("{}", ".lora_A.default.weight", ".lora_B.default.weight", False),
    # ai-toolkit for Z-Image / Flux.2: diffusion_model.<module>
    "aitoolkit": ("diffusion_model.{}", ".lora_A.weight", ".lora_B.weight", False),
    # kohya / musubi-tuner: lora_unet_<module with _>, lora_down/lora_up/alpha
    "musubi": ("lora_unet_{}", ".lora_down.weight", ".lora_up.weight", True),
    # OneTrainer's LEGACY output for Qwen-Image and Z-Image (its LoRAModuleWrapper's canonical state dict, saved
    # unconverted): transformer.<diffusers module>, lora_down/lora_up/alpha
    "onetrainer": ("transformer.{}", ".lora_down.weight", ".lora_up.weight", True),
    # OneTrainer's COMFY output: diffusion_model.<ComfyUI's own module> (Z-Image: the fused attention.qkv),
    # lora_A/lora_B, alpha kept
    "onetrainer_comfy": ("diffusion_model.{}", ".lora_A.weight", ".lora_B.weight", True),
    # OneTrainer's KOHYA output (kohya-ss / musubi-tuner layout, LoRASaverMixin._convert_kohya): lora_unet_<the model's
    # own module with _> (Z-Image: the fused attention_qkv; Qwen-Image: its diffusers names), lora_down/lora_up/alpha
    "onetrainer_kohya": ("lora_unet_{}", ".lora_down.weight", ".lora_up.weight", True),
    # LyCORIS LoKr (what people train Flux.2 with besides LoRA), kohya names: lora_unet_<module with _>.lokr_w1 (4x4)
    # and .lokr_w2 (out/4 x in/4), full factors and no alpha (the host's scale is then 1): dW = kron(w1, w2)
    "lokr": ("lora_unet_{}", ".lokr_w1", ".lokr_w2", False),
}
# alpha where a naming's trainer writes something else than the rank: OneTrainer's default lora_alpha is 1.0, so
# its files scale B·A by 1/rank (the up factor is made rank times larger: the same dW, and an alpha ignored or
# misread changes the result by that factor)
ALPHA = {"onetrainer": 1.0, "onetrainer_comfy": 1.0, "onetrainer_kohya": 1.0}
FLAT = ("musubi", "lokr", "onetrainer_kohya")  # namings that flatten the module path ('.' -> '_')
NATIVE = ("onetrainer_comfy", "onetrainer_kohya")  # namings of the model's own (ComfyUI's) module names


def family_lora(family, naming="peft", seed=0, rank=4, cache=None, only=None):
    """A LoRA for the tiny ``family`` model in ``naming`` (LORA_NAMINGS), fp16, rank 4, every linear layer of the
    blocks; alpha = rank where the naming stores one (scale 1), or ALPHA's value.  ``only``: a tuple of module-name
    prefixes (e.g. ("layers.",)) keeps just those modules, with the same values as in the full file (the reference
    of a block weight that keeps only those blocks)."""
    import torch
    from safetensors.torch import save_file
    from . import cache_dir
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    tag = ("" if not only else "_only_" + "_".join(o.strip(".") for o in only)) + \
        (f"_a{ALPHA[naming]:g}" if naming in ALPHA else "")
    path = d / f"{family}_tiny_lora_{naming}_v{GENERATOR_VERSION}_r{rank}{tag}_seed{seed}.safetensors"
    if path.exists():
        return path
    fmt, down, up, alpha = LORA_NAMINGS[naming]
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for module, (out_f, in_f) in _lora_modules(family, native=naming in NATIVE):
        name = fmt.format(module.replace(".", "_") if naming in FLAT else module)
        if naming == "lokr":  # down/up stand for w1/w2 here
            a = torch.randn((4, 4), generator=g).to(torch.float16)
            b = (torch.randn((out_f // 4, in_f // 4), generator=g) * 0.05 / in_f ** 0.5).to(torch.float16)
        else:
            a = (torch.randn((rank, in_f), generator=g) / in_f ** 0.5).to(torch.float16)
            b = (torch.randn((out_f, rank), generator=g) * 0.05).to(torch.float16)
        if only and not module.startswith(tuple(only)):
            continue
        if naming in ALPHA:
            b = (b.float() * rank / ALPHA[naming]).to(torch.float16)
        sd[name + down], sd[name + up] = a, b
        if alpha:
            sd[name + ".alpha"] = torch.tensor(float(ALPHA.get(naming, rank)), dtype=torch.float16)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata={"lean_fixture": f"{family} lora {naming} v{GENERATOR_VERSION} seed {seed}"})
    os.replace(tmp, path)
    return path
