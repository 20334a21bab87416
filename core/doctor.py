"""System report: "will it run here, and with which settings?".  Pure logic: no host imports.

One report dict for ``python scripts/lean.py doctor`` and the System Check node:

    facts = gather(folders, comfyui_version=..., dynamic_vram=..., host_device=...)   # reads the machine
    report = build_report(facts)                                                       # pure: recommendations
    text = render_text(report)

``gather`` reads the machine: torch (each accelerator it sees), psutil (CPU, RAM), ``shutil.disk_usage`` (each model
folder), ``nvidia-smi topo -m`` when ``nvidia-smi`` is on PATH, and the *headers* of the model files (safetensors JSON
header, GGUF key/values and tensor table): weights are never read.  ``recommend(facts)`` is a pure function of those
facts (tests feed it fake devices).  Offline, no download, well under 3 s beyond the torch import.
"""
import os
import platform
import re
import shutil
import struct
import sys
import urllib.parse

from . import llm_gguf, st_header, workflow

GiB = 1 << 30
FIT_FOLDERS = ("checkpoints", "diffusion_models", "loras", "llm")
IMAGE_FOLDERS = ("checkpoints", "diffusion_models")
MODEL_EXTS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".pt2", ".onnx")
LLM_N_CTX = 4096  # Local LLM Loader's default context
TOPO_TIMEOUT_S = 2.0

# Working room an accelerator needs beside the weights (activations, VAE decode, CUDA/driver context).
def headroom(total):
    return max(GiB, total // 10)


FIT, LOWVRAM, CPU, TOO_BIG = "fits in VRAM", "needs --lowvram", "CPU only", "does not fit"
PROJECTOR = "vision projector"

# ----------------------------------------------------------------------------------------------- facts

def _safe(fn, default=None):
    try:
        return fn()
    except Exception:
        return default


def _devices_torch():
    """Each accelerator torch can see: CUDA/ROCm, MPS, XPU, Ascend NPU (torch_npu)."""
    import importlib.util
    try:
        import torch
    except Exception as e:
        return [], f"torch not importable: {type(e).__name__}: {e}"
    out = []
    if _safe(torch.cuda.is_available, False):
        hip = getattr(torch.version, "hip", None)
        drv = _safe(lambda: torch._C._cuda_getDriverVersion())
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            free_total = _safe(lambda: torch.cuda.mem_get_info(i))
            d = {"kind": "rocm" if hip else "cuda", "index": i, "name": p.name, "total": int(p.total_memory),
                 "free": int(free_total[0]) if free_total else None,
                 "compute_capability": None if hip else f"{p.major}.{p.minor}",
                 "runtime": f"HIP {hip}" if hip else f"CUDA {torch.version.cuda}",
                 "driver": (f"CUDA driver API {drv // 1000}.{drv % 1000 // 10}" if isinstance(drv, int) and drv
                            else None)}
            if hip:
                d["arch"] = getattr(p, "gcnArchName", None)
            out.append(d)
        nv = _nvml_driver()
        if nv:
            for d in out:
                if d["kind"] == "cuda":
                    d["driver"] = f"NVIDIA {nv}" + (f" ({d['driver']})" if d["driver"] else "")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and _safe(mps.is_available, False):
        total = _safe(lambda: int(torch.mps.recommended_max_memory()))
        out.append({"kind": "mps", "index": 0, "name": f"Apple MPS ({platform.machine()})", "total": total,
                    "free": None, "unified": True, "compute_capability": None, "runtime": None, "driver": None})
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and _safe(xpu.is_available, False):
        for i in range(xpu.device_count()):
            p = xpu.get_device_properties(i)
            ft = _safe(lambda: xpu.mem_get_info(i))
            out.append({"kind": "xpu", "index": i, "name": p.name, "total": int(getattr(p, "total_memory", 0)) or None,
                        "free": int(ft[0]) if ft else None, "compute_capability": None,
                        "runtime": getattr(torch.version, "xpu", None), "driver": getattr(p, "driver_version", None)})
    if importlib.util.find_spec("torch_npu") is not None:
        try:
            import torch_npu  # noqa: F401  (registers torch.npu)
            npu = torch.npu
            if npu.is_available():
                for i in range(npu.device_count()):
                    ft = _safe(lambda: npu.mem_get_info(i))
                    out.append({"kind": "npu", "index": i, "name": _safe(lambda: npu.get_device_name(i), "Ascend NPU"),
                                "total": int(ft[1]) if ft else None, "free": int(ft[0]) if ft else None,
                                "compute_capability": None, "runtime": f"torch_npu {torch_npu.__version__}",
                                "driver": _safe(lambda: torch_npu.version.cann, None)})
        except Exception as e:
            out.append({"kind": "npu", "index": 0, "name": "Ascend NPU", "total": None, "free": None,
                        "error": f"torch_npu present but not usable: {type(e).__name__}: {e}"})
    return out, None


def _nvml_driver():
    try:
        import pynvml
    except Exception:
        return None
    try:
        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else v
    except Exception:
        return None


def _topology():
    exe = shutil.which("nvidia-smi")
    if not exe:
        return "nvidia-smi not found"
    try:
        r = __import__("subprocess").run([exe, "topo", "-m"], capture_output=True, text=True, timeout=TOPO_TIMEOUT_S)
    except Exception as e:
        return f"nvidia-smi topo -m failed: {type(e).__name__}: {e}"
    return (r.stdout or r.stderr).strip() or f"nvidia-smi topo -m gave no output (exit {r.returncode})"


def _cpu_ram():
    try:
        import psutil
    except Exception:
        return {"cores_logical": os.cpu_count(), "cores_physical": None, "ram_total": None, "ram_free": None,
                "note": "psutil not installed: RAM not read"}
    vm = psutil.virtual_memory()
    return {"cores_logical": psutil.cpu_count(logical=True), "cores_physical": psutil.cpu_count(logical=False),
            "ram_total": int(vm.total), "ram_free": int(vm.available)}


def _disk(folders):
    out = {}
    for name, dirs in folders.items():
        for d in dirs:
            entry = {"folder": name, "exists": os.path.isdir(d)}
            if entry["exists"]:
                du = _safe(lambda: shutil.disk_usage(d))
                entry.update(free=int(du.free) if du else None, total=int(du.total) if du else None)
            out[d] = entry
    return out


def _pkg_version(*dists):
    from importlib import metadata
    for d in dists:
        try:
            return metadata.version(d)
        except Exception:
            continue
    return None


def _software(pack_root, comfyui_version, dynamic_vram):
    import importlib.util
    sw = {"python": platform.python_version(), "python_path": sys.executable, "os": platform.platform(),
          "comfyui": comfyui_version, "dynamic_vram": dynamic_vram, "pack": _pack_version(pack_root)}
    try:
        import torch
        build = []
        if getattr(torch.version, "cuda", None):
            build.append(f"CUDA {torch.version.cuda}")
        if getattr(torch.version, "hip", None):
            build.append(f"ROCm {torch.version.hip}")
        if getattr(torch.version, "xpu", None):
            build.append(f"XPU {torch.version.xpu}")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and _safe(mps.is_built, False):
            build.append("MPS")
        sw["torch"] = torch.__version__
        sw["torch_build"] = " + ".join(build) or "CPU"
    except Exception as e:
        sw["torch"], sw["torch_build"] = None, f"not importable ({type(e).__name__})"
    opt = {}
    if importlib.util.find_spec("llama_cpp") is not None:
        try:
            import llama_cpp
            fn = getattr(llama_cpp, "llama_supports_gpu_offload", None)
            opt["llama_cpp"] = {"version": getattr(llama_cpp, "__version__", None) or _pkg_version("llama_cpp_python"),
                                "gpu_offload": bool(fn()) if fn else None}
        except Exception as e:
            opt["llama_cpp"] = {"version": None, "error": f"{type(e).__name__}: {e}"}
    else:
        opt["llama_cpp"] = None
    if importlib.util.find_spec("cv2") is not None:
        try:
            import cv2
            opt["opencv"] = cv2.__version__
        except Exception as e:
            opt["opencv"] = f"present, import failed: {type(e).__name__}: {e}"
    else:
        opt["opencv"] = None
    for name, dists in (("gguf", ("gguf",)), ("safetensors", ("safetensors",)), ("psutil", ("psutil",)),
                        ("comfy_aimdo", ("comfy-aimdo", "comfy_aimdo"))):
        opt[name] = _pkg_version(*dists) if importlib.util.find_spec(name) is not None else None
    sw["optional"] = opt
    return sw


def _pack_version(pack_root):
    if not pack_root:
        return None
    try:
        text = open(os.path.join(pack_root, "pyproject.toml"), encoding="utf-8").read()
    except OSError:
        return None
    m = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    return m.group(1) if m else None


# ------------------------------------------------------------------------------------- model headers

# checkpoint key prefixes -> part
_PARTS = (("model.diffusion_model.", "diffusion"), ("first_stage_model.", "vae"), ("vae.", "vae"),
          ("cond_stage_model.", "text_encoder"), ("conditioner.", "text_encoder"), ("text_encoders.", "text_encoder"))
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
              11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
              18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16",
              26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}


def read_safetensors_summary(path):
    """{"dtype", "bytes", "by_dtype", "parts", "tensors"} from the JSON header only (read and validated by the
    pack's one safetensors header reader: a damaged or crafted file raises its HeaderError, a ValueError)."""
    h = st_header.read_header(path)
    by_dtype, parts, total = {}, {}, 0
    for key, t in h.tensors.items():
        nb = t.nbytes
        total += nb
        by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + nb
        part = next((p for pre, p in _PARTS if key.startswith(pre)), None)
        if part:
            parts[part] = parts.get(part, 0) + nb
    return {"format": "safetensors", "tensors": len(h.tensors), "bytes": total, "by_dtype": by_dtype,
            "dtype": max(by_dtype, key=by_dtype.get) if by_dtype else None, "parts": parts}


def read_gguf_summary(path):
    """Architecture, layer count, per-layer bytes and the KV-cache shape from the GGUF header (tensor table
    included; tensor data never read)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(4) != llm_gguf.MAGIC:
            raise ValueError("not a GGUF file")
        version, n_tensors, n_kv = struct.unpack("<IQQ", llm_gguf._read(f, 20))
        meta = {}
        for _ in range(n_kv):
            key = llm_gguf._string(f)
            (vtype,) = struct.unpack("<I", llm_gguf._read(f, 4))
            if vtype in (llm_gguf._ARRAY,):
                llm_gguf._skip_value(f, vtype)
            else:
                meta[key] = llm_gguf._value(f, vtype)
        tensors = []
        for _ in range(n_tensors):
            name = llm_gguf._string(f)
            (nd,) = struct.unpack("<I", llm_gguf._read(f, 4))
            f.seek(8 * nd, os.SEEK_CUR)
            ttype, off = struct.unpack("<IQ", llm_gguf._read(f, 12))
            tensors.append((off, name, ttype))
        align = int(meta.get("general.alignment", 32))
        data_start = -(-f.tell() // align) * align
    tensors.sort()
    layer_bytes, other, by_type = 0, 0, {}
    for i, (off, name, ttype) in enumerate(tensors):
        end = tensors[i + 1][0] if i + 1 < len(tensors) else size - data_start
        nb = end - off
        t = GGML_TYPES.get(ttype, f"type{ttype}")
        by_type[t] = by_type.get(t, 0) + nb
        if name.startswith("blk."):
            layer_bytes += nb
        else:
            other += nb
    arch = meta.get("general.architecture")
    g = lambda k: meta.get(f"{arch}.{k}")  # noqa: E731
    n_layers = g("block_count")
    n_embd, n_head, n_head_kv = g("embedding_length"), g("attention.head_count"), g("attention.head_count_kv")
    kv_per_token = None
    if n_layers and n_embd and n_head:
        head_dim = g("attention.key_length") or n_embd // n_head
        kv_per_token = 2 * int(n_layers) * int(n_head_kv or n_head) * int(head_dim) * 2  # K and V, f16
    projector = {}
    if arch == "clip":  # a vision projector (mmproj): what it is and how wide its output is (pairing)
        from .llm_vision import ProjectorInfo
        info = ProjectorInfo(path, os.path.basename(path), meta)
        projector = {"projector_type": info.type, "projector_output": info.output_dim,
                     "sees_images": bool(meta.get("clip.has_vision_encoder"))}
    return {"format": "gguf", "version": version, "architecture": arch, "name": meta.get("general.name"),
            "n_embd": n_embd, **projector, "n_layers": n_layers, "bytes": layer_bytes + other, "layer_bytes": layer_bytes, "other_bytes": other,
            "by_dtype": by_type, "dtype": max(by_type, key=by_type.get) if by_type else None,
            "kv_bytes_per_token": kv_per_token, "context_length": g("context_length")}


def read_model(path, folder):
    """One model file: name, folder, size and what its header says (never its weights)."""
    item = {"path": path, "folder": folder, "size": os.path.getsize(path)}
    low = path.lower()
    try:
        if low.endswith((".safetensors", ".sft")):
            item.update(read_safetensors_summary(path))
        elif low.endswith(".gguf"):
            item.update(read_gguf_summary(path))
        else:
            item.update(format="pickle" if low.endswith((".ckpt", ".pt", ".pth", ".bin")) else "other",
                        bytes=item["size"], dtype=None,
                        note="dtype not read: a pickle file has no header that can be read without unpickling")
    except Exception as e:
        item.update(error=f"unreadable header: {type(e).__name__}: {e}", bytes=item["size"], dtype=None)
    return item


def list_model_files(dirs):
    """(relative name with '/', full path) of each model file under `dirs`, first folder wins, sorted."""
    seen, out = set(), []
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for root, subdirs, files in os.walk(d, followlinks=True):
            subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
            for fn in sorted(files):
                if not fn.lower().endswith(MODEL_EXTS):
                    continue
                full = os.path.join(root, fn)
                rel = os.path.relpath(full, d).replace(os.sep, "/")
                if rel not in seen:
                    seen.add(rel)
                    out.append((rel, full))
    return out


def scan_models(folders):
    out = []
    for name in FIT_FOLDERS:
        for rel, full in list_model_files(folders.get(name, [])):
            if name == "llm" and not rel.lower().endswith(".gguf"):
                continue
            item = read_model(full, name)
            item["name"] = rel
            out.append(item)
    return out


def gather(folders, comfyui_version=None, dynamic_vram=None, host_device=None, pack_root=None, scan=True):
    """Every fact the report needs.  `folders`: {folder name: [dirs]} (at least the FIT_FOLDERS);
    `host_device`: what ComfyUI itself uses, when the caller runs inside it ({"device": "cuda:0", ...})."""
    devices, torch_error = _devices_torch()
    return {"devices": devices, "torch_error": torch_error, "host_device": host_device,
            "topology": _topology(),
            "cpu": _cpu_ram(), "disk": _disk(folders), "folders": {k: list(v) for k, v in folders.items()},
            "software": _software(pack_root, comfyui_version, dynamic_vram),
            "models": scan_models(folders) if scan else []}


# -------------------------------------------------------------------------------- recommendations

def _gib(n):
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def main_device(facts):
    """The accelerator the image model runs on (the one with most memory), or None for CPU."""
    hd = facts.get("host_device") or {}
    if str(hd.get("device", "")).startswith("cpu"):
        return None
    devs = [d for d in facts.get("devices", []) if d.get("total") and not d.get("error")]
    if not devs:
        return None
    return max(devs, key=lambda d: d["total"])


def image_weight(item, on_gpu):
    """Bytes the diffusion model takes while sampling: the diffusion part of a checkpoint (text encoder and
    VAE are loaded in turn), fp32 weights counted at 16 bits on an accelerator (ComfyUI keeps them in
    fp16/bf16 there)."""
    b = item.get("parts", {}).get("diffusion") or item.get("bytes") or item["size"]
    if on_gpu and item.get("dtype") == "F32":
        b //= 2
    return b


def llm_need(item, n_ctx=LLM_N_CTX):
    kv = (item.get("kv_bytes_per_token") or 0) * n_ctx
    compute = 256 << 20  # llama.cpp's compute buffer, order of magnitude for prompt writing
    return item.get("bytes") or item["size"], kv + compute


def recommend(facts):
    """Pure: {"files": [...], "llm": [...], "flags": [...], "problems": [...], "notes": [...]}."""
    dev = main_device(facts)
    ram_total = (facts.get("cpu") or {}).get("ram_total") or 0
    ram_room = max(0, ram_total - 2 * GiB)
    sw = facts.get("software") or {}
    llama = (sw.get("optional") or {}).get("llama_cpp")
    files, llms, flags, problems, notes = [], [], [], [], []
    total = (dev or {}).get("total") or 0
    usable = max(0, total - headroom(total)) if dev else 0
    if dev and dev.get("unified"):
        notes.append(f"{dev['name']}: unified memory; the GPU shares the {_gib(ram_total)} of RAM")

    def flag(f, why):
        if all(x["flag"] != f for x in flags):
            flags.append({"flag": f, "why": why})

    if dev is None:
        hd = facts.get("host_device") or {}
        why = ("ComfyUI runs on the CPU" if str(hd.get("device", "")).startswith("cpu") and facts.get("devices")
               else "torch sees no GPU")
        flag("--cpu", f"{why}: everything runs on the CPU (scripts/lean.py serve adds --cpu by itself)")
    images = [m for m in facts.get("models", []) if m["folder"] in IMAGE_FOLDERS and not m.get("error")]
    biggest = max((image_weight(m, dev is not None) for m in images), default=0)
    for m in facts.get("models", []):
        r = {"name": m["name"], "folder": m["folder"], "size": m["size"], "dtype": m.get("dtype")}
        if m.get("error"):
            r.update(status="unreadable", why=m["error"])
            problems.append(f"{m['folder']}/{m['name']}: {m['error']}")
            files.append(r)
            continue
        if m["folder"] in IMAGE_FOLDERS:
            w = image_weight(m, dev is not None)
            r["weight"] = w
            if dev is None:
                ok = m["size"] <= ram_room
                r.update(status=CPU if ok else TOO_BIG,
                         why=f"{_gib(m['size'])} in {_gib(ram_total)} RAM" + ("" if ok else ": more than the RAM"))
            elif w <= usable:
                r.update(status=FIT, why=f"{_gib(w)} of {_gib(usable)} usable on {dev['name']}")
            elif w <= usable + ram_room:
                r.update(status=LOWVRAM, why=f"{_gib(w)} > {_gib(usable)} usable VRAM: part of it stays in RAM")
                flag("--lowvram", f"{m['name']} ({_gib(w)}) does not fit in {_gib(usable)} of VRAM")
            else:
                r.update(status=TOO_BIG, why=f"{_gib(w)} is more than VRAM ({_gib(usable)}) and RAM together")
            if r["status"] == TOO_BIG:
                problems.append(f"{m['folder']}/{m['name']}: {r['why']}")
        elif m["folder"] == "loras":
            b = m.get("bytes") or m["size"]
            if dev is None:
                r.update(status=CPU, why=f"{_gib(b)}")
            elif biggest + b <= usable:
                r.update(status=FIT, why=f"{_gib(b)} beside the biggest image model ({_gib(biggest)})")
            else:
                r.update(status=LOWVRAM, why=f"{_gib(b)} does not fit beside the biggest image model "
                                             f"({_gib(biggest)}) in {_gib(usable)}")
        elif m["folder"] == "llm" and m.get("architecture") == "clip":
            r.update(_projector_pairs(m, facts.get("models", [])))
            if r["pairs_with"] == []:
                notes.append(f"llm/{m['name']}: {r['why']}")
        elif m["folder"] == "llm":
            r.update(_llm_fit(m, dev, usable, biggest, ram_room, llama))
            llms.append(r)
            if r["status"] == TOO_BIG:
                problems.append(f"llm/{m['name']}: {r['why']}")
        files.append(r)
    gpu_llms = [r for r in llms if r.get("keep_loaded") and r.get("gpu_bytes")]
    if gpu_llms:
        g = max(r["gpu_bytes"] for r in gpu_llms)
        res = -(-g * 2 // GiB) / 2  # round up to 0.5 GiB
        flag(f"--reserve-vram {res:g}", f"llama.cpp holds about {_gib(g)} of VRAM that ComfyUI does not see; "
                                        f"reserving it keeps ComfyUI from planning with that memory")
    if any(m["folder"] == "llm" for m in facts.get("models", [])) and not llama:
        notes.append("llm folder has .gguf files but llama-cpp-python is not installed: backend llama_cpp will "
                     "not load (pip install llama-cpp-python), backend openai still works")
    if llama and llama.get("gpu_offload") is False and dev is not None:
        notes.append("llama-cpp-python is a CPU-only build: n_gpu_layers is ignored; reinstall it with GPU "
                     "support (e.g. CMAKE_ARGS=\"-DGGML_CUDA=on\") to offload layers")
    if facts.get("torch_error"):
        problems.append(facts["torch_error"])
    old_torch = torch_warning(sw.get("torch"))
    if old_torch:
        notes.append(old_torch)
    for d, e in (facts.get("disk") or {}).items():
        if e.get("exists") and e.get("free") is not None and e["free"] < 2 * GiB:
            notes.append(f"only {_gib(e['free'])} free on the disk of {e['folder']} ({d})")
    return {"device": dev and f"{dev['kind']}:{dev['index']} {dev['name']}", "usable_vram": usable if dev else None,
            "biggest_image_model": biggest, "files": files, "llm": llms, "flags": flags, "problems": problems,
            "notes": notes}


TORCH_SAFE = (2, 10)


def torch_version_tuple(version):
    """(major, minor, patch) of a torch version string ("2.5.1+cu121", "2.10.0.dev20251201"), or None."""
    import re
    m = re.match(r"\s*(\d{1,4})\.(\d{1,4})(?:\.(\d{1,4}))?", str(version or ""))
    return tuple(int(g or 0) for g in m.groups()) if m else None


def torch_warning(version):
    """A warning line when torch is older than 2.10, saying why; "" otherwise (or when the version is unknown)."""
    v = torch_version_tuple(version)
    if v is None or v[:2] >= TORCH_SAFE:
        return ""
    why = ("torch.load(weights_only=True) can be bypassed on torch <= 2.5.1 (CVE-2025-32434: a crafted .ckpt/.pt/.pth "
           "runs code when loaded) and its unpickler is not memory-safe against crafted files below 2.10"
           if v <= (2, 5, 1) else
           "torch.load(weights_only=True)'s unpickler is not memory-safe against crafted files below 2.10")
    return (f"WARNING: torch {version} is older than 2.10: {why}. Update torch in ComfyUI's Python (pip install -U "
            f"torch, with your CUDA/ROCm index URL) and prefer .safetensors files; until then only load .ckpt/.pt "
            f"files you trust")


def _projector_pairs(m, models):
    """A projector (mmproj) in models/llm: which language models there it can be loaded with (its output width
    equals the model's hidden size); None when its header does not tell (LLaVA-type projectors)."""
    kind = m.get("projector_type") or "?"
    if not m.get("sees_images", True):
        return {"status": PROJECTOR, "pairs_with": None, "why": f"type {kind}: no vision encoder (audio?)"}
    out = m.get("projector_output")
    if out is None:
        return {"status": PROJECTOR, "pairs_with": None,
                "why": f"type {kind}: which model it pairs with is not in its header (pick it with its model)"}
    pairs = [x["name"] for x in models if x["folder"] == "llm" and x.get("architecture") not in (None, "clip")
             and not x.get("error") and x.get("n_embd") == out]
    if not pairs:
        return {"status": PROJECTOR, "pairs_with": [],
                "why": f"type {kind}, {out} wide: pairs with no model in models/llm (put its language model "
                       f"beside it)"}
    return {"status": PROJECTOR, "pairs_with": pairs,
            "why": f"type {kind}: pairs with {', '.join(pairs[:8])}" + (" ..." if len(pairs) > 8 else "")}


def _llm_fit(m, dev, usable, biggest, ram_room, llama):
    weights, extra = llm_need(m)
    n = m.get("n_layers")
    per_layer = (m.get("layer_bytes") or weights) / n if n else None
    r = {"n_layers": n, "need": weights + extra}
    offload = dev is not None and (llama is None or llama.get("gpu_offload") is not False)
    if not offload:
        ok = weights + extra <= ram_room
        r.update(status=CPU if ok else TOO_BIG, n_gpu_layers=0, n_gpu_layers_beside=0, together=None,
                 keep_loaded=True, gpu_bytes=0,
                 why=(f"{_gib(weights + extra)} in RAM (n_ctx {LLM_N_CTX})" if ok
                      else f"{_gib(weights + extra)} is more than the RAM"))
        if dev is not None and ok:
            r["why"] += "; llama-cpp-python has no GPU offload"
        return r

    def layers_in(room):
        if weights + extra <= room:
            return -1
        if not per_layer:
            return 0
        return max(0, min(n, int((room - extra - (m.get("other_bytes") or 0)) // per_layer)))

    alone, beside = layers_in(usable), layers_in(usable - biggest)
    together = beside == -1
    gpu_bytes = weights + extra if together else (0 if beside <= 0 else int(beside * per_layer) + extra)
    r.update(n_gpu_layers=alone, n_gpu_layers_beside=beside, together=together, keep_loaded=together,
             gpu_bytes=gpu_bytes)
    if together:
        r.update(status=FIT, why=f"{_gib(weights + extra)} (n_ctx {LLM_N_CTX}) fits beside the biggest image model "
                                 f"({_gib(biggest)}): n_gpu_layers=-1, keep_loaded=true")
    elif alone == -1:
        r.update(status=FIT, why=f"fits alone (n_gpu_layers=-1) but not beside the image model ({_gib(biggest)}): "
                                 f"keep_loaded=false, or n_gpu_layers={beside} to keep it loaded")
    elif alone > 0:
        r.update(status=LOWVRAM, why=f"{alone} of {n} layers fit in VRAM (n_gpu_layers={alone}), the rest runs on "
                                     f"the CPU; beside the image model n_gpu_layers={beside}; keep_loaded=false")
        r["keep_loaded"] = False
    else:
        ok = weights + extra <= ram_room
        r.update(status=CPU if ok else TOO_BIG, keep_loaded=False,
                 why="no layer fits in VRAM: n_gpu_layers=0" + ("" if ok else "; and more than the RAM"))
    return r


def build_report(facts):
    return {"hardware": {"devices": facts.get("devices", []), "host_device": facts.get("host_device"),
                         "topology": facts.get("topology"), "cpu": facts.get("cpu"), "disk": facts.get("disk")},
            "software": facts.get("software"), "folders": facts.get("folders"), "models": facts.get("models", []),
            "fit": recommend(facts)}


# ------------------------------------------------------------------------------------ workflow check

VIRTUAL_NODES = workflow.VIRTUAL_NODES  # node types that only live in the editor (one list, core/workflow.py)


def workflow_nodes(data):
    """[(node id, type, [string values])] of a UI- or API-format workflow (subgraph nodes included)."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "nodes" not in data:
        data = data["prompt"]
    out = []
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        subs = [s for s in ((data.get("definitions") or {}).get("subgraphs") or []) if isinstance(s, dict)]
        sub_ids = {s.get("id") for s in subs}
        graphs = [("", data["nodes"])] + [(f"{s.get('name') or s.get('id')}/", s.get("nodes") or []) for s in subs]
        for prefix, nodes in graphs:
            for n in nodes:
                t = n.get("type")
                if not t or t in VIRTUAL_NODES or t in sub_ids:
                    continue
                wv = n.get("widgets_values")
                vals = list(wv.values()) if isinstance(wv, dict) else (wv or [])
                out.append((f"{prefix}{n.get('id')}", t, [v for v in vals if isinstance(v, str)]))
    elif isinstance(data, dict):
        for nid, n in data.items():
            if isinstance(n, dict) and "class_type" in n:
                vals = [v for v in (n.get("inputs") or {}).values() if isinstance(v, str)]
                out.append((str(nid), n["class_type"], vals))
    else:
        raise ValueError("not a ComfyUI workflow (neither UI format with 'nodes' nor API format with 'class_type')")
    return out


def check_workflow(data, model_index, node_types=None, fit=None, node_source=None):
    """Node types and model files one workflow needs, against this machine.
    model_index: {relative file name: (folder, full path)} of every model folder of the host;
    node_types: the node types the host knows (None: not checked); fit: recommend()'s result."""
    nodes = workflow_nodes(data)
    by_name = {(f["folder"], f["name"]): f for f in (fit or {}).get("files", [])}
    types = sorted({t for _, t, _ in nodes})
    missing_nodes = sorted({t for _, t, _ in nodes if node_types is not None and t not in node_types})
    files, problems = [], []
    for nid, t, vals in nodes:
        for v in vals:
            if not v.lower().endswith(MODEL_EXTS):
                continue
            key = v.replace("\\", "/")
            hit = model_index.get(key)
            f = {"node": nid, "type": t, "file": v, "found": hit is not None}
            if hit:
                f["folder"], f["path"] = hit
                st = by_name.get(hit[0:1] + (key,)) or by_name.get(("diffusion_models", key))
                if st:
                    f["status"], f["why"] = st.get("status"), st.get("why")
                    if st.get("status") in (TOO_BIG, "unreadable"):
                        problems.append(f"node #{nid} ({t}): {v}: {st['why']}")
            else:
                problems.append(f"node #{nid} ({t}): model file '{v}' is not in any model folder of this ComfyUI")
            files.append(f)
    for t in missing_nodes:
        ids = [nid for nid, tt, _ in nodes if tt == t]
        problems.append(f"node type {t} (node #{', #'.join(ids)}) is not installed in this ComfyUI: install its "
                        f"custom node pack")
    return {"node_types": types, "nodes_checked": node_types is not None, "node_source": node_source,
            "missing_nodes": missing_nodes, "files": files, "problems": problems}


# ------------------------------------------------------------------------------------------- text

def render_text(report):
    hw, sw, fit = report["hardware"], report.get("software") or {}, report["fit"]
    L = ["== Lean Nodes system check =="]
    L.append("-- Hardware")
    if not hw["devices"]:
        L.append("accelerators: none that torch can see (CPU only)")
    for d in hw["devices"]:
        bits = [f"{d['kind']}:{d['index']} {d['name']}", f"memory {_gib(d.get('total'))} total"
                + (f", {_gib(d['free'])} free" if d.get("free") is not None else "")]
        for k, label in (("compute_capability", "compute capability"), ("arch", "arch"), ("runtime", "runtime"),
                         ("driver", "driver")):
            if d.get(k):
                bits.append(f"{label} {d[k]}")
        if d.get("error"):
            bits.append(d["error"])
        L.append("accelerator: " + "; ".join(bits))
    if hw.get("host_device"):
        hd = hw["host_device"]
        L.append(f"ComfyUI device: {hd.get('device')}" + (f", {_gib(hd['vram_total'])} total, "
                                                         f"{_gib(hd.get('vram_free'))} free" if hd.get("vram_total") else ""))
    topo = hw.get("topology") or ""
    L.append("topology: " + (topo if "\n" not in topo else "(nvidia-smi topo -m)\n  " + topo.replace("\n", "\n  ")))
    c = hw["cpu"] or {}
    L.append(f"CPU: {c.get('cores_logical')} logical cores" + (f", {c['cores_physical']} physical" if c.get("cores_physical") else ""))
    L.append(f"RAM: {_gib(c.get('ram_total'))} total, {_gib(c.get('ram_free'))} free" + (f" ({c['note']})" if c.get("note") else ""))
    for d, e in (hw.get("disk") or {}).items():
        L.append(f"disk {e['folder']}: {d}: " + (f"{_gib(e.get('free'))} free of {_gib(e.get('total'))}" if e["exists"] else "folder does not exist"))
    L.append("-- Software")
    L.append(f"Python {sw.get('python')} ({sw.get('python_path')}) on {sw.get('os')}")
    L.append(f"torch {sw.get('torch')} ({sw.get('torch_build')})")
    L.append(f"ComfyUI {sw.get('comfyui') or '?'}; DynamicVRAM: {sw.get('dynamic_vram') or '?'}")
    L.append(f"Lean Nodes {sw.get('pack') or '?'}")
    opt = sw.get("optional") or {}
    lc = opt.get("llama_cpp")
    L.append("llama-cpp-python: " + ("not installed" if not lc else
             f"{lc.get('version')}, GPU offload {'yes' if lc.get('gpu_offload') else 'no' if lc.get('gpu_offload') is False else '?'}"
             + (f" ({lc['error']})" if lc.get("error") else "")))
    L.append("OpenCV: " + (opt.get("opencv") or "not installed"))
    L.append("other: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in opt.items() if k not in ("llama_cpp", "opencv")))
    L.append("-- What fits" + (f" (on {fit['device']}, {_gib(fit['usable_vram'])} usable)" if fit.get("device") else " (CPU only)"))
    if not fit["files"]:
        L.append("no model files in " + ", ".join(FIT_FOLDERS))
    for f in fit["files"]:
        line = f"{f['folder']}/{f['name']}: {_gib(f['size'])}, {f.get('dtype') or 'dtype ?'}: {f['status']} ({f['why']})"
        L.append(line)
    for fl in fit["flags"]:
        L.append(f"flag: {fl['flag']}  ({fl['why']})")
    if not fit["flags"]:
        L.append("flags: none needed")
    for n in fit["notes"]:
        L.append(f"note: {n}")
    wf = report.get("workflow")
    if wf:
        L.append(f"-- Workflow {wf.get('path', '')}")
        L.append(f"node types: {len(wf['node_types'])}" + (
            f"; missing: {', '.join(wf['missing_nodes']) or 'none'} (from {wf.get('node_source')})" if wf["nodes_checked"]
            else f"; node availability NOT checked ({wf.get('node_source') or 'no host answered'})"))
        for f in wf["files"]:
            L.append(f"file {f['file']} (node #{f['node']} {f['type']}): " + (
                f"found in {f['folder']}" + (f", {f['status']}" if f.get("status") else "") if f["found"] else "MISSING"))
    if report.get("distributed"):
        L.extend(render_distributed(report["distributed"]))
    problems = list(fit["problems"]) + list((wf or {}).get("problems", [])) + list(report.get("problems", [])) \
        + list((report.get("distributed") or {}).get("problems", []))
    L.append("-- Result: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    L.extend(f"problem: {p}" for p in problems)
    return "\n".join(L)


def problems(report):
    return list(report["fit"]["problems"]) + list((report.get("workflow") or {}).get("problems", [])) \
        + list(report.get("problems", [])) + list((report.get("distributed") or {}).get("problems", []))



# ------------------------------------------------------------------------------- a distributed setup

_WILDCARD_REF = re.compile(r"__([^\s{}|]+?)__")
MAX_WILDCARD_REFS = 10_000


MAX_WILDCARD_HASHES = 10_000   # wildcard files listed by a manifest; more are counted, not hashed


def wildcard_hashes(roots, limit=MAX_WILDCARD_HASHES):
    """{wildcard name: sha256 of its file} of the wildcards folders (first folder wins, as Prompt Batch reads them).
    Only what Prompt Batch itself would read is listed: a name its rule accepts, a regular file (never a pipe or a
    device, which could block), whose real path lies inside its folder (a link that leads out is skipped, so no
    hash of an outside file ever leaves the machine).  Each file is hashed in chunks, at most MAX_TEXT_CHARS * 4
    bytes of it (a larger file is refused by Prompt Batch anyway); at most `limit` names.
    -> ({name: sha256}, how many more were left out)"""
    import hashlib
    import stat

    from .prompts import MAX_TEXT_CHARS, WildcardStore, WildcardError
    cap = MAX_TEXT_CHARS * 4 + 1   # utf-8: at most 4 bytes a character
    out, over = {}, 0
    for root in roots:
        if not root or not os.path.isdir(root):
            continue
        real_root = os.path.realpath(root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for fn in sorted(filenames):
                if not fn.lower().endswith(".txt"):
                    continue
                full = os.path.join(dirpath, fn)
                name = os.path.relpath(full[:-4], root).replace(os.sep, "/")
                if name in out:
                    continue
                try:
                    WildcardStore.check_name(name)
                    real = os.path.realpath(full)
                    if not WildcardStore.real_inside(real_root, real) or not stat.S_ISREG(os.stat(real).st_mode):
                        continue
                except (WildcardError, OSError, ValueError):
                    continue
                if len(out) >= limit:
                    over += 1
                    continue
                h, left = hashlib.sha256(), cap
                try:
                    with open(real, "rb") as f:
                        while left > 0:
                            chunk = f.read(min(left, 1 << 20))
                            if not chunk:
                                break
                            h.update(chunk)
                            left -= len(chunk)
                except OSError:
                    continue
                out[name] = h.hexdigest()
    return out, over


def wildcards_used(texts, read):
    """Wildcard names the texts use, directly or inside the wildcard files they use (`read(name)` -> text or None),
    each read once, at most MAX_WILDCARD_REFS names."""
    todo = [m for t in texts for m in _WILDCARD_REF.findall(t or "")]
    seen = []
    while todo and len(seen) < MAX_WILDCARD_REFS:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        todo.extend(_WILDCARD_REF.findall(read(name) or ""))
    return sorted(seen)


def check_distributed(workers, local, needs, asker):
    """Each enabled worker of ComfyUI-Distributed's config (core.distributed.config_workers) against this machine.
    local: {"pack": version, "wildcards": {name: sha256}}; needs: {"files": [(node type, file name)], "wildcards":
    [names]} (what the workflow names; empty without a workflow); asker(url, path) -> JSON (raises when the worker
    does not answer).  Only the workers of the config are asked.  -> {"workers": [...], "problems": [...]}"""
    rows, problems = [], []
    for wid, w in workers.items():
        if not w.get("enabled"):
            rows.append({"id": wid, "name": w["name"], "url": w["url"], "enabled": False})
            continue
        who = f"worker {w['name']!r} (id {wid}, {w['url']})"
        row = {"id": wid, "name": w["name"], "url": w["url"], "enabled": True, "answers": False, "problems": []}
        rows.append(row)
        try:
            asker(w["url"], "/system_stats")
            row["answers"] = True
        except Exception as e:  # noqa: BLE001 - any failure: it does not answer
            row["problems"].append(f"{who} does not answer ({type(e).__name__}: {e}); start it, or disable it in "
                                   "ComfyUI-Distributed")
            problems += row["problems"]
            continue
        try:
            manifest = asker(w["url"], "/lean/distributed/manifest")
        except Exception as e:  # noqa: BLE001
            manifest = None
            row["problems"].append(f"{who}: Lean Nodes does not answer there ({type(e).__name__}: {e}); install "
                                   f"Lean Nodes {local.get('pack')} in that ComfyUI")
        if manifest is not None:
            row["pack"] = manifest.get("pack")
            if manifest.get("pack") != local.get("pack"):
                row["problems"].append(f"{who} runs Lean Nodes {manifest.get('pack')}, this machine "
                                       f"{local.get('pack')}; install the same version on every participant")
            theirs = manifest.get("wildcards") or {}
            for name in needs.get("wildcards", []):
                mine = (local.get("wildcards") or {}).get(name)
                if name not in theirs and manifest.get("wildcards_left_out"):
                    row["problems"].append(f"{who} lists only its first {len(theirs)} wildcard files, not "
                                           f"__{name}__; make sure its wildcards/{name}.txt equals this machine's")
                elif name not in theirs:
                    row["problems"].append(f"{who} has no wildcard __{name}__ (wildcards/{name}.txt); copy it there")
                elif mine is not None and theirs[name] != mine:
                    row["problems"].append(f"{who}: wildcard __{name}__ differs from this machine's; copy the same "
                                           "file there (each participant expands the prompts itself)")
        by_type = {}
        for node_type, fname in needs.get("files", []):
            if node_type not in by_type:
                try:
                    info = asker(w["url"], "/object_info/" + urllib.parse.quote(node_type, safe=""))
                    by_type[node_type] = _choices(info.get(node_type) if isinstance(info, dict) else None)
                except Exception as e:  # noqa: BLE001
                    by_type[node_type] = None
                    row["problems"].append(f"{who}: node type {node_type} not answered there ({type(e).__name__})")
            have = by_type[node_type]
            if have is not None and fname.replace("\\", "/") not in have:
                row["problems"].append(f"{who} has no {fname} (for {node_type}); put the same file in its models "
                                       "folder")
        problems += row["problems"]
    return {"workers": rows, "problems": problems}


def _choices(info):
    """Every option of every combo input of a node's /object_info entry (the model files it can load), '/'-separated."""
    out = set()
    for group in ("required", "optional"):
        for spec in ((info or {}).get("input") or {}).get(group, {}).values():
            if isinstance(spec, list) and spec:
                opts = spec[0] if isinstance(spec[0], list) else (spec[1] or {}).get("options") \
                    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict) else None
                for o in opts or []:
                    if isinstance(o, str):
                        out.add(o.replace("\\", "/"))
    return out


def render_distributed(dist):
    L = [f"-- Distributed (ComfyUI-Distributed config {dist.get('config')})"]
    if not dist["workers"]:
        L.append("no workers in the config")
    for r in dist["workers"]:
        if not r["enabled"]:
            L.append(f"worker {r['name']} ({r['url']}): disabled, not checked")
            continue
        state = "answers" if r["answers"] else "does NOT answer"
        L.append(f"worker {r['name']} ({r['url']}): {state}" + (f", Lean Nodes {r['pack']}" if r.get("pack") else "")
                 + ("" if r["problems"] else ", OK"))
    return L
