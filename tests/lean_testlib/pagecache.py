"""Which bytes of a file are in the page cache: an outside view of what a loader really read.

    evict(path)                      # posix_fadvise(DONTNEED): drop the file's clean, unmapped pages
    resident_bytes(path, a, b)       # bytes of [a, b) in the page cache (mincore), page granularity

Linux only.  Pages another process still maps cannot be evicted, so callers evict first and check
that eviction worked (``resident_bytes`` of the whole file near 0) before trusting a measurement.
"""
import ctypes
import ctypes.util
import mmap
import os

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_pages(path):
    """bytearray with one entry per page of the file: 1 if in the page cache.  Mapping the file to
    ask does not read it (mincore only looks)."""
    size = os.path.getsize(path)
    n = (size + PAGE - 1) // PAGE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            vec = (ctypes.c_ubyte * n)()
            if _libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return bytearray(b & 1 for b in vec)
        finally:
            _libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def resident_bytes(path, start=0, end=None, pages=None):
    """Bytes of the page-aligned pages fully inside [start, end) that are in the page cache."""
    pages = resident_pages(path) if pages is None else pages
    end = os.path.getsize(path) if end is None else end
    first = -(-start // PAGE)
    last = end // PAGE
    return sum(pages[first:last]) * PAGE
