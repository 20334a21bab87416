"""Import stand-in for torchvision and torchaudio, for TEST HOSTS ONLY.

scripts/hosts.py copies this file into a provisioned host's own virtual environment (with a .pth line that calls
install()) when the real packages cannot be imported there: the registry's torchvision wheels are built against
CUDA torch and fail beside the CPU torch ("operator torchvision::nms does not exist"), and torchaudio stops at
2.11.  ComfyUI 0.33 imports both at start-up (torchvision.ops, torchvision.transforms.functional, torchaudio ...)
in model files that Lean's tests never run.

Any submodule imports (``import torchvision.models.optical_flow``), any name can be imported from it
(``from torchvision.ops import roi_align``), and anything that is really used -- called, iterated, compared --
raises ModuleNotFoundError naming the stand-in.  The pack itself never imports either package.
"""
import importlib.abc
import importlib.machinery
import sys
import types

__all__ = ["install", "standin_module"]


class _Missing:
    """A name imported from the stand-in; using it fails loudly."""

    def __init__(self, qualname):
        object.__setattr__(self, "_qualname", qualname)

    def _fail(self, *a, **k):
        raise ModuleNotFoundError(f"{self._qualname} is an import stand-in for tests (the real package does not "
                                  f"load beside this CPU torch); it cannot be used")

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Missing(f"{self._qualname}.{name}")

    def __mro_entries__(self, bases):  # `class X(torchvision.something)` at module level still defines X
        return (object,)

    __call__ = __iter__ = __len__ = __getitem__ = __enter__ = _fail

    def __bool__(self):
        return False

    def __repr__(self):
        return f"<lean import stand-in {self._qualname}>"


class _StandinModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Missing(f"{self.__name__}.{name}")


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        mod = _StandinModule(spec.name)
        mod.__path__ = []  # a package: every submodule goes through the finder again
        mod.__version__ = "0.0.0+lean-test-standin"
        mod.__lean_standin__ = True
        return mod

    def exec_module(self, module):
        parent, _, child = module.__name__.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, module)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, roots):
        self.roots = tuple(roots)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".", 1)[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)
        return None


def standin_module(name):
    """A stand-in module for `name` (a package: its submodules come through the finder)."""
    spec = importlib.machinery.ModuleSpec(name, _Loader(), is_package=True)
    mod = _Loader().create_module(spec)
    mod.__spec__ = spec
    mod.__loader__ = spec.loader
    return mod


def install(roots=("torchvision", "torchaudio")):
    """Stand in for `roots` (top-level package names) from now on in this interpreter."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder(roots))
