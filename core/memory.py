"""Memory that goes back to the OS when it is freed.

glibc keeps most freed heap memory (and raises its mmap threshold after large frees), so a process that
loads and frees models again and again creeps up in RSS even though nothing leaks.  Weights the pack
allocates in bulk therefore live in anonymous mappings of their own: freeing the last tensor that uses one
unmaps it.  Pure logic: torch only, imported inside the functions.

Portable: ``mmap.mmap(-1, n)`` is an anonymous mapping on every OS (Windows: a pagefile-backed section, freed
when its last view is unmapped -- the same guarantee).  Where ``mmap.MAP_PRIVATE`` exists (POSIX) the mapping
is made private, as before; Windows' ``mmap`` takes no flags.
"""
import mmap

OWN_MAPPING_MIN = 1 << 20


def _anonymous_mapping(nbytes):
    """``nbytes`` of zero-filled memory in a mapping of its own (fileno -1: anonymous, zero-filled on first
    touch).  POSIX: private (``MAP_PRIVATE``; Python adds ``MAP_ANONYMOUS``).  Windows has no flags: its
    anonymous mapping is backed by the pagefile and released when unmapped, the same guarantee."""
    if hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    return mmap.mmap(-1, nbytes)


def empty_own_mapping(shape, dtype):
    """An uninitialised CPU tensor; from ``OWN_MAPPING_MIN`` bytes up in its own anonymous private mapping,
    which goes back to the OS the moment the tensor is freed.  Memory from malloc would instead stay with
    the allocator after a model is unloaded (glibc keeps freed heap), so RSS would creep up over reloads.
    Smaller tensors use torch's allocator."""
    import torch
    numel = 1
    for s in shape:
        numel *= int(s)
    nbytes = numel * dtype.itemsize
    if nbytes < OWN_MAPPING_MIN:
        return torch.empty(tuple(shape), dtype=dtype)
    m = _anonymous_mapping(nbytes)
    return torch.frombuffer(m, dtype=dtype, count=numel).view(tuple(shape))


class Slabs:
    """A bump allocator for many small tensors that live and die together (a LoRA's cast factors): they
    are carved out of ``slab``-byte mappings of their own (64-byte aligned), so freeing the group unmaps
    its memory instead of leaving hundreds of small freed chunks in the heap.  Requests of a quarter slab
    or more get a mapping each.  Not thread-safe (one sampler thread uses it)."""

    ALIGN = 64

    def __init__(self, slab=16 << 20):
        self.slab = slab
        self._cur = None
        self._off = 0

    def empty(self, shape, dtype):
        import torch
        shape = tuple(int(s) for s in shape)
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * dtype.itemsize
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        if nbytes * 4 >= self.slab:
            return empty_own_mapping(shape, dtype)
        if self._cur is None or self._off + nbytes > self.slab:
            self._cur = empty_own_mapping((self.slab,), torch.uint8)
            self._off = 0
        t = self._cur[self._off:self._off + nbytes].view(dtype).view(shape)
        self._off += -(-nbytes // self.ALIGN) * self.ALIGN
        return t

    def copy_of(self, t, dtype):
        """``t`` converted to ``dtype`` (CPU), in a slab."""
        out = self.empty(t.shape, dtype)
        out.copy_(t)
        return out


def release_freed_memory():
    """Give freed heap memory back to the OS (glibc ``malloc_trim``).  Loading converts many tensors into fresh
    memory; without this, glibc keeps the freed pages of earlier loads and RSS creeps up over many reloads.
    No-op where glibc is not the allocator (Windows, macOS, musl: nothing to call, False)."""
    import ctypes
    import ctypes.util
    import sys
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False
