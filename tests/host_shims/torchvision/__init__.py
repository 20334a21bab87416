"""Import stand-in for torchvision, used ONLY by the test harness when the real package cannot be
imported beside the CPU torch (PyPI's torchvision wheels are built against CUDA torch and fail with
"operator torchvision::nms does not exist").  ComfyUI imports torchvision at module level in a few
model files (Stable Cascade, Cosmos, ACE) that Lean's tests never run; SD1.5 needs none of it.
Anything that really uses torchvision fails loudly with AttributeError."""
import sys
import types

__version__ = "0.0.0+lean-test-stub"
transforms = types.ModuleType("torchvision.transforms")
models = types.ModuleType("torchvision.models")
sys.modules[__name__ + ".transforms"] = transforms
sys.modules[__name__ + ".models"] = models
