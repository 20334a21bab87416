"""A test-only custom node giving a Flux-shaped CONDITIONING without a text encoder (a T5-XXL/CLIP-L pair has
no tiny form the host detects): seeded random T5 tokens [1, tokens, 4096], a CLIP-L pooled output [1, 768] and
Flux's guidance, i.e. what CLIPTextEncodeFlux gives.

Not part of the pack: a tier-2 test links it into the test host's custom_nodes/ (``install(base)``).
"""


class TestFluxCond_lean:
    DESCRIPTION = "Test: a seeded random Flux conditioning (T5 tokens, pooled CLIP-L, guidance)."
    CATEGORY = "testing"
    FUNCTION = "make"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31, "tooltip": "seed"}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 512, "tooltip": "T5 tokens"}),
                             "context_dim": ("INT", {"default": 4096, "min": 1, "max": 8192, "tooltip": "T5 width"}),
                             "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "tooltip": "guidance"})}}

    def make(self, seed, tokens, context_dim, guidance):
        import torch
        g = torch.Generator().manual_seed(seed)
        cond = torch.randn((1, tokens, context_dim), generator=g)
        pooled = torch.randn((1, 768), generator=g)
        return ([[cond, {"pooled_output": pooled, "guidance": guidance}]],)


NODE_CLASS_MAPPINGS = {"TestFluxCond_lean": TestFluxCond_lean}


def install(base):
    from .probe_node import link_into
    return link_into(base, __file__, "lean_test_flux_cond")
