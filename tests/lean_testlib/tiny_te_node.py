"""Test-only (not part of the pack): lets the host's DualCLIPLoader (type flux) load the tiny T5-XXL / CLIP-L
fixtures of flux_files.py.  The host builds T5-XXL (24 blocks) and CLIP-L (12 layers) from fixed configs; this
hook, linked into a test host's custom_nodes/ before it starts, passes FluxClipModel the fixtures' configs
(``t5xxl_model_config`` / ``clip_l_model_config``, options the host's SDClipModel reads) -- only when the T5
state dict has exactly the tiny fixture's shape (one block, width 4096), so a real T5 file is never affected.
The same for the tiny Qwen3-4B / Qwen2.5-VL-7B / Mistral Small 3.x fixtures of families.py (the host builds 36 / 28
/ 40 full-size layers): ``qwen3_4b_model_config`` / ``qwen25_7b_model_config`` / ``mistral3_24b_model_config`` (read
by the host's SDClipModel for the encoder of that name) get the fixtures' layer/head/FFN counts (Mistral: heads,
FFN and its 512-token vocabulary), only when the file has exactly the tiny fixture's shapes (one or four heads of
128; the real files have 32 / 28 / 32), so a real encoder is never affected.
Everything else (detection, tokenizers, loading, the model patcher, encoding) stays the host's own code.
"""
import logging

NODE_CLASS_MAPPINGS = {}

TINY_T5 = {"d_model": 4096, "num_layers": 1, "num_heads": 2, "d_kv": 32, "d_ff": 64}  # = flux_files.TINY_T5
TINY_QWEN3 = {"num_hidden_layers": 28, "num_attention_heads": 1, "num_key_value_heads": 1,
              "intermediate_size": 64}  # = families.TINY_QWEN3
TINY_QWEN25 = {"num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
               "intermediate_size": 64}  # = families.TINY_QWEN25
TINY_MISTRAL3 = {"num_attention_heads": 1, "num_key_value_heads": 1, "intermediate_size": 64,
                 "vocab_size": 512}  # = families.TINY_MISTRAL3
TINY_CLIP_L = {"hidden_size": 768, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
               "projection_dim": 768}


def _is_tiny_t5(sd):
    return ("encoder.block.0.layer.0.SelfAttention.q.weight" in sd
            and "encoder.block.1.layer.0.SelfAttention.q.weight" not in sd
            and tuple(sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape)
            == (TINY_T5["num_heads"] * TINY_T5["d_kv"], TINY_T5["d_model"]))


def _tiny_qwen(sd):
    """(option name, config) for a tiny Qwen or Mistral fixture's state dict, else None."""
    q = sd.get("model.layers.0.self_attn.q_proj.weight")
    if q is None or "model.layers.0.post_attention_layernorm.weight" not in sd:
        return None
    shape = tuple(q.shape)
    if shape == (TINY_QWEN3["num_attention_heads"] * 128, 2560) and "model.layers.0.self_attn.q_norm.weight" in sd:
        return "qwen3_4b_model_config", TINY_QWEN3
    if shape == (TINY_QWEN25["num_attention_heads"] * 128, 3584) and "model.layers.0.self_attn.q_proj.bias" in sd:
        return "qwen25_7b_model_config", TINY_QWEN25
    if shape == (TINY_MISTRAL3["num_attention_heads"] * 128, 5120) and "tekken_model" in sd \
            and tuple(sd["model.embed_tokens.weight"].shape) == (TINY_MISTRAL3["vocab_size"], 5120):
        return "mistral3_24b_model_config", TINY_MISTRAL3
    return None


def _install():
    import comfy.sd
    orig = comfy.sd.load_text_encoder_state_dicts
    if getattr(orig, "_lean_tiny_te", False):
        return

    def load_text_encoder_state_dicts(state_dicts=[], *args, **kwargs):
        if any(_is_tiny_t5(sd) for sd in state_dicts):
            options = dict(kwargs.get("model_options") or {})
            options.setdefault("t5xxl_model_config", TINY_T5)
            options.setdefault("clip_l_model_config", dict(TINY_CLIP_L))
            # the host rebuilds clip_l_model_config from "model_config" when it reads CLIP-L's position embedding
            # (text_encoders/long_clipl.py): give it the tiny config there too
            options.setdefault("model_config", dict(TINY_CLIP_L))
            kwargs["model_options"] = options
            logging.info("[lean test] tiny T5-XXL fixture: building T5 %s and CLIP-L %s", TINY_T5, TINY_CLIP_L)
        for sd in state_dicts:
            tiny = _tiny_qwen(sd)
            if tiny is not None:
                options = dict(kwargs.get("model_options") or {})
                options.setdefault(tiny[0], dict(tiny[1]))
                kwargs["model_options"] = options
                logging.info("[lean test] tiny LLM fixture: %s %s", *tiny)
        return orig(state_dicts, *args, **kwargs)

    load_text_encoder_state_dicts._lean_tiny_te = True
    comfy.sd.load_text_encoder_state_dicts = load_text_encoder_state_dicts


if not __package__:  # loaded by the host as a custom node, not imported by a test
    _install()


def install(base):
    from .probe_node import link_into
    return link_into(base, __file__, "lean_test_tiny_te")
