"""Tier 1: what nodes/_host.py knows about ComfyUI-GGUF's classes (recognised by class name, never imported).
The real classes are exercised in tests/test_tier2_gguf_lora.py with ComfyUI-GGUF installed in a host."""
import enum

import torch

from lean_nodes.nodes import _host as _peers


def test_weight_kind_fp8_and_plain():
    lin = torch.nn.Linear(4, 4)
    assert _peers.weight_kind(lin) == "fp32"
    lin.weight.data = lin.weight.data.to(torch.float8_e4m3fn)
    assert _peers.weight_kind(lin) == "fp8_e4m3fn"
    lin.weight.data = lin.weight.data.float().to(torch.bfloat16)
    assert _peers.weight_kind(lin) == "bf16"
    assert _peers.weight_kind(torch.nn.ReLU()) == "no weight"


class GGMLQuantizationType(enum.IntEnum):
    Q4_K = 12


class GGMLTensor(torch.Tensor):
    pass


class GGMLLayer(torch.nn.Module):
    pass


def test_weight_kind_recognises_gguf_classes_by_name():
    """GGMLTensor weights (tensor_type = a gguf quant type) and GGMLLayer ops are recognised by class name,
    through subclasses too."""
    class Linear(GGMLLayer, torch.nn.Linear):  # GGMLOps.Linear's shape: a GGMLLayer and an nn.Linear
        pass

    class Sub(GGMLTensor):
        pass

    lin = Linear(4, 4)
    assert _peers.weight_kind(lin) == "gguf"  # the op is GGUF's even while its weight is a plain tensor
    w = torch.zeros(4, 4).as_subclass(Sub)
    w.tensor_type = GGMLQuantizationType.Q4_K
    lin.__dict__["weight"] = w
    assert _peers.weight_kind(lin) == "gguf Q4_K"
    plain = torch.nn.Linear(4, 4)
    plain.__dict__["weight"] = torch.zeros(4, 4).as_subclass(GGMLTensor)
    assert _peers.weight_kind(plain) == "gguf"  # no tensor_type: still GGUF


def test_weight_shape_is_the_logical_shape_of_packed_data():
    """A packed GGMLTensor (Q8_0 [320, 320, 1, 1] is 400 rows of 272 bytes) has dim() 2; its logical shape is
    its tensor_shape; any other tensor answers its own shape (a tensor_shape attribute elsewhere is ignored)."""
    packed = torch.zeros(400, 272, dtype=torch.uint8).as_subclass(GGMLTensor)
    packed.tensor_shape = torch.Size((320, 320, 1, 1))
    assert packed.dim() == 2
    assert _peers.weight_shape(packed) == (320, 320, 1, 1)
    plain = torch.zeros(3, 4, 5)
    assert _peers.weight_shape(plain) == (3, 4, 5)
    plain.tensor_shape = (1,)
    assert _peers.weight_shape(plain) == (3, 4, 5)
