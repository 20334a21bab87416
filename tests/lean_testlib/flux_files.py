"""Flux's text-encoder and VAE files as fixtures (random weights), for running a stock Flux workflow
(DualCLIPLoader type flux + VAELoader) in tier 2:

    flux_vae()        -> ae.safetensors-shaped file: Black Forest Labs' Flux autoencoder, the exact key names and
                         shapes (encoder/decoder, ch 128, ch_mult 1,2,4,4, 2 res blocks, 16 latent channels, no
                         quant_conv), bf16, ~84 M parameters (~168 MB).  Full size: the host builds the VAE from a
                         fixed config, so a smaller file would not load.
    tiny_t5xxl()      -> a T5-XXL encoder file (HF T5EncoderModel key names: shared, encoder.block.N..., final norm)
                         with d_model 4096 but one block, 2 heads of 32, d_ff 64 (fp16, ~0.27 GB)
    tiny_clip_l()     -> a CLIP-L text-model file (HF CLIPTextModel key names, width 768, 2 layers, fp16)

The host builds T5-XXL and CLIP-L from fixed configs (24 blocks, 12 layers): loading the tiny files as they are
would build the full-size models around them.  tiny_te_node.py (test-only, linked into the test host) gives
FluxClipModel the TINY_T5 / TINY_CLIP_L configs so DualCLIPLoader builds models of exactly these files' shapes.
All written from the published layouts, not from the host's classes.
"""
import os

GENERATOR_VERSION = 1
TINY_T5 = {"d_model": 4096, "num_layers": 1, "num_heads": 2, "d_kv": 32, "d_ff": 64}
TINY_CLIP_L = {"hidden_size": 768, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
               "projection_dim": 768}


def t5_keys(d_model, num_layers, num_heads, d_kv, d_ff, vocab=32128):
    inner = num_heads * d_kv
    keys = {"shared.weight": (vocab, d_model), "encoder.final_layer_norm.weight": (d_model,)}
    for i in range(num_layers):
        p = f"encoder.block.{i}.layer."
        for n in "qkv":
            keys[f"{p}0.SelfAttention.{n}.weight"] = (inner, d_model)
        keys[f"{p}0.SelfAttention.o.weight"] = (d_model, inner)
        if i == 0:
            keys[f"{p}0.SelfAttention.relative_attention_bias.weight"] = (32, num_heads)
        keys[f"{p}0.layer_norm.weight"] = (d_model,)
        keys[f"{p}1.DenseReluDense.wi_0.weight"] = (d_ff, d_model)
        keys[f"{p}1.DenseReluDense.wi_1.weight"] = (d_ff, d_model)
        keys[f"{p}1.DenseReluDense.wo.weight"] = (d_model, d_ff)
        keys[f"{p}1.layer_norm.weight"] = (d_model,)
    return keys


def clip_l_keys(hidden_size, num_hidden_layers, intermediate_size, projection_dim, vocab=49408, positions=77, **_):
    h = hidden_size
    keys = {"text_model.embeddings.token_embedding.weight": (vocab, h),
            "text_model.embeddings.position_embedding.weight": (positions, h),
            "text_model.final_layer_norm.weight": (h,), "text_model.final_layer_norm.bias": (h,),
            "text_projection.weight": (projection_dim, h)}
    for i in range(num_hidden_layers):
        p = f"text_model.encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys[f"{p}self_attn.{n}.weight"] = (h, h)
            keys[f"{p}self_attn.{n}.bias"] = (h,)
        for n in ("layer_norm1", "layer_norm2"):
            keys[f"{p}{n}.weight"] = (h,)
            keys[f"{p}{n}.bias"] = (h,)
        keys[f"{p}mlp.fc1.weight"] = (intermediate_size, h)
        keys[f"{p}mlp.fc1.bias"] = (intermediate_size,)
        keys[f"{p}mlp.fc2.weight"] = (h, intermediate_size)
        keys[f"{p}mlp.fc2.bias"] = (h,)
    return keys


def _resnet(keys, p, cin, cout):
    keys[p + "norm1.weight"] = keys[p + "norm1.bias"] = (cin,)
    keys[p + "conv1.weight"], keys[p + "conv1.bias"] = (cout, cin, 3, 3), (cout,)
    keys[p + "norm2.weight"] = keys[p + "norm2.bias"] = (cout,)
    keys[p + "conv2.weight"], keys[p + "conv2.bias"] = (cout, cout, 3, 3), (cout,)
    if cin != cout:
        keys[p + "nin_shortcut.weight"], keys[p + "nin_shortcut.bias"] = (cout, cin, 1, 1), (cout,)


def _mid(keys, p, c):
    _resnet(keys, p + "mid.block_1.", c, c)
    keys[p + "mid.attn_1.norm.weight"] = keys[p + "mid.attn_1.norm.bias"] = (c,)
    for n in ("q", "k", "v", "proj_out"):
        keys[f"{p}mid.attn_1.{n}.weight"], keys[f"{p}mid.attn_1.{n}.bias"] = (c, c, 1, 1), (c,)
    _resnet(keys, p + "mid.block_2.", c, c)


def flux_vae_keys(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=16):
    keys = {"encoder.conv_in.weight": (ch, 3, 3, 3), "encoder.conv_in.bias": (ch,)}
    mult_in = (1,) + tuple(ch_mult)
    for i, m in enumerate(ch_mult):
        cin, cout = ch * mult_in[i], ch * m
        for j in range(num_res_blocks):
            _resnet(keys, f"encoder.down.{i}.block.{j}.", cin if j == 0 else cout, cout)
        if i != len(ch_mult) - 1:
            keys[f"encoder.down.{i}.downsample.conv.weight"] = (cout, cout, 3, 3)
            keys[f"encoder.down.{i}.downsample.conv.bias"] = (cout,)
    top = ch * ch_mult[-1]
    _mid(keys, "encoder.", top)
    keys["encoder.norm_out.weight"] = keys["encoder.norm_out.bias"] = (top,)
    keys["encoder.conv_out.weight"], keys["encoder.conv_out.bias"] = (2 * z_channels, top, 3, 3), (2 * z_channels,)
    keys["decoder.conv_in.weight"], keys["decoder.conv_in.bias"] = (top, z_channels, 3, 3), (top,)
    _mid(keys, "decoder.", top)
    cin = top
    for i in reversed(range(len(ch_mult))):
        cout = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            _resnet(keys, f"decoder.up.{i}.block.{j}.", cin, cout)
            cin = cout
        if i != 0:
            keys[f"decoder.up.{i}.upsample.conv.weight"] = (cout, cout, 3, 3)
            keys[f"decoder.up.{i}.upsample.conv.bias"] = (cout,)
    keys["decoder.norm_out.weight"] = keys["decoder.norm_out.bias"] = (ch,)
    keys["decoder.conv_out.weight"], keys["decoder.conv_out.bias"] = (3, ch, 3, 3), (3,)
    return keys


def _write(name, keys, dtype, seed, cache, note):
    import torch
    from safetensors.torch import save_file
    from . import cache_dir
    d = (cache or cache_dir()) / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}_v{GENERATOR_VERSION}_seed{seed}.safetensors"
    if path.exists():
        return path
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in keys.items():
        if len(shape) == 1:  # norm weights near 1, biases small
            t = 1.0 + 0.1 * torch.randn(shape, generator=g) if k.endswith("weight") else 0.02 * torch.randn(shape, generator=g)
        elif "embed" in k or k == "shared.weight" or "relative_attention_bias" in k:
            t = torch.randn(shape, generator=g)
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t = torch.randn(shape, generator=g) / fan_in ** 0.5
        sd[k] = t.to(dtype)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata={"lean_fixture": f"{note} v{GENERATOR_VERSION} seed {seed}"})
    os.replace(tmp, path)
    return path


def flux_vae(seed=0, cache=None):
    import torch
    return _write("flux_vae_ae", flux_vae_keys(), torch.bfloat16, seed, cache, "Flux ae.safetensors layout")


def tiny_t5xxl(seed=0, cache=None):
    import torch
    tag = "t5xxl_tiny_" + "_".join(f"{k}{v}" for k, v in sorted(TINY_T5.items()))
    return _write(tag, t5_keys(**TINY_T5), torch.float16, seed, cache, "tiny T5-XXL encoder")


def tiny_clip_l(seed=0, cache=None):
    import torch
    tag = "clip_l_tiny_" + "_".join(f"{k}{v}" for k, v in sorted(TINY_CLIP_L.items()))
    return _write(tag, clip_l_keys(**TINY_CLIP_L), torch.float16, seed, cache, "tiny CLIP-L text model")
