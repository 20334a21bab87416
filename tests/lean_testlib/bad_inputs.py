"""The bad-input catalogue: malformed files and values sent to every Lean node as real prompts.

    files = make_bad_files(base, marker)          # bad models/wildcards/inputs in a host's base dir
    for case in CASES: prompt = case.prompt()     # an API-format prompt built around one Lean node
    outcome = run_case(host, case)                # -> Outcome(handled, stage, text, why)

Each Case names the Lean node under test, what is wrong (``what``), and the words that must appear in the error
(``expect``: all of them, case-insensitive) -- either the validation error ``/prompt`` answers with, or the
execution error in ``/history``.  A case for a node the host does not have is skipped by the caller (the features
land one by one).  ``snapshot`` / ``diff`` record every file under a tree so a test can prove nothing was written
outside ComfyUI's output/ and temp/.
"""
import dataclasses
import json
import os
import pathlib
import pickle
import re
import shutil
import struct
import zipfile

from . import images, lora, tiny_gguf, tiny_vision
from .workloads import LORA, SD15, TINY  # the fixture names the host is given, defined once

PHOTO = "lean_bad_inputs_photo.png"
VL, VL_PROJ = "lean_tiny_vl.gguf", "mmproj-lean_tiny_vl.gguf"  # in models/llm/vl/
LONG = "x" * 5000


# ------------------------------------------------------------------------------------------ bad files

class _Evil:
    """Unpickling this runs code: it writes the marker file.  Every loader must refuse it unrun."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('unpickled: code ran')",))


def write_evil_ckpt(path, marker):
    """A torch-style zip checkpoint whose data.pkl calls builtins.exec (as torch.save would write it)."""
    data = pickle.dumps({"state_dict": _Evil(marker)}, protocol=2)
    stem = pathlib.Path(path).stem
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{stem}/data.pkl", data)
        z.writestr(f"{stem}/byteorder", "little")
        z.writestr(f"{stem}/version", "3\n")
    return path


def write_evil_pickle(path, marker):
    """The same payload as a legacy (non-zip) pickle, the oldest .ckpt/.pt format."""
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil(marker)}, f, protocol=2)
    return path


def write_safetensors(path, tensors, metadata=None, header_override=None):
    """A minimal safetensors writer (F32 only), independent of the safetensors package.  `header_override`
    replaces the JSON header (to write malformed files)."""
    import numpy as np
    header, blobs, off = ({"__metadata__": metadata} if metadata else {}), [], 0
    for k, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header if header_override is None else header_override).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return path


def write_flux_lora(path):
    """A LoRA made for another architecture (Flux double blocks, kohya names): nothing matches SD1.5."""
    import numpy as np
    rng = np.random.default_rng(0)
    t = {}
    for i in range(2):
        for mod in ("img_attn_qkv", "txt_attn_proj"):
            k = f"lora_unet_double_blocks_{i}_{mod}"
            t[f"{k}.lora_down.weight"] = rng.normal(0, 0.01, (4, 64))
            t[f"{k}.lora_up.weight"] = rng.normal(0, 0.01, (64, 4))
            t[f"{k}.alpha"] = np.array(4.0)
    return write_safetensors(path, t)


def make_bad_files(base, marker, narrow=False):
    """Bad files in base/models/* and base/input.  Returns {label: path}.  `marker` is the file the evil
    pickles would write: it must never appear.  narrow: the good LoRA is the narrow SD1.5's (sd15.NARROW), for a
    host given the narrow checkpoint under SD15."""
    base = pathlib.Path(base)
    m = base / "models"
    for d in ("checkpoints", "loras", "llm", "wildcards", "diffusion_models", "text_encoders"):
        (m / d).mkdir(parents=True, exist_ok=True)
    lora_src = lora.sd15_lora(narrow=narrow)
    tiny = tiny_gguf.tiny_model("chatml")
    files = {}

    def put(folder, name, data=None, link=None, copy_head=None):
        p = m / folder / name if folder else base / name
        if p.exists() or p.is_symlink():
            p.unlink()
        if link is not None:
            p.symlink_to(link)
        elif copy_head is not None:
            src, n = copy_head
            with open(src, "rb") as f:
                p.write_bytes(f.read(n))
        else:
            p.write_bytes(data)
        files[f"{folder}/{name}"] = p
        return p

    half = os.path.getsize(lora_src) // 2
    corrupt = struct.pack("<Q", 1 << 40) + b"\x00" * 64          # header length far past the file's end
    badjson = struct.pack("<Q", 24) + b'{"a": {"dtype": "F32", '     # header is not JSON
    for folder in ("checkpoints", "loras", "diffusion_models", "text_encoders"):
        put(folder, "zero_bytes.safetensors", b"")
        put(folder, "truncated.safetensors", copy_head=(lora_src, half))
        put(folder, "corrupt_header.safetensors", corrupt)
        put(folder, "not_json.safetensors", badjson)
        write_evil_ckpt(m / folder / "evil.ckpt", marker)
        write_evil_pickle(m / folder / "evil_legacy.pt", marker)
    put("checkpoints", "lora_not_checkpoint.safetensors", link=lora_src)
    put("diffusion_models", "lora_not_diffusion_model.safetensors", link=lora_src)
    put("text_encoders", "lora_not_text_encoder.safetensors", link=lora_src)
    put("loras", LORA, link=lora_src)
    write_flux_lora(m / "loras" / "flux_lora.safetensors")
    write_safetensors(m / "loras" / "not_a_lora.safetensors", {"foo.weight": [[1.0, 2.0]], "bar.bias": [3.0]})

    put("llm", TINY, link=tiny)
    put("llm", "zero_bytes.gguf", b"")
    put("llm", "not_gguf.gguf", b"this is a text file, not a model\n" * 20)
    put("llm", "renamed_safetensors.gguf", link=lora_src)
    put("llm", "truncated_header.gguf", copy_head=(tiny, 3000))
    put("llm", "truncated_tensors.gguf", copy_head=(tiny, os.path.getsize(tiny) * 2 // 3))
    tiny_gguf.write_unknown_arch(m / "llm" / "unknown_arch.gguf")
    # issue 25: a vision model in its own folder (so (auto) there finds its projector), and bad projectors
    proj = tiny_vision.projector()
    (m / "llm" / "vl").mkdir(exist_ok=True)
    put("llm", "vl/" + VL, link=tiny_vision.text_model())
    put("llm", "vl/" + VL_PROJ, link=proj)
    put("llm", "mmproj-other-model.gguf", link=tiny_vision.projector(n_embd_out=96))
    put("llm", "mmproj-corrupt.gguf", copy_head=(proj, 400))
    put("llm", "mmproj-cut.gguf", copy_head=(proj, os.path.getsize(proj) * 2 // 3))
    put("llm", "mmproj-is-a-model.gguf", link=tiny)

    put("wildcards", "cycle_a.txt", b"red __cycle_b__\n")
    put("wildcards", "cycle_b.txt", b"blue __cycle_a__\n")
    put("wildcards", "self_ref.txt", b"again __self_ref__\n")
    put("wildcards", "only_comments.txt", b"# nothing here\n\n")
    secret = base / "secret_outside.txt"
    secret.write_text("SECRET-OUTSIDE-THE-MODEL-FOLDERS\n")
    put("wildcards", "escape.txt", link=secret)                    # a symlink pointing out of the folder
    (base / "input").mkdir(exist_ok=True)
    shutil.copy(images.photo_png(), base / "input" / PHOTO)
    (base / "input" / "lean_prompts.txt").write_text("a cat\na dog\n")
    make_prompt_limit_files(m / "wildcards")
    for folder in ("checkpoints", "diffusion_models"):
        files.update(write_crafted_headers(m / folder))               # issue 21: headers that lie
    return files


# ------------------------------------------------------------------------------------------ graphs

def _preview(node, slot=0, extra=None):
    g = {"n": node, "v": {"class_type": "PreviewAny", "inputs": {"source": ["n", slot]}}}
    g.update(extra or {})
    return g


def llm_loader(**kw):
    inputs = dict(backend="llama_cpp", model=TINY, base_url="http://127.0.0.1:8080/v1", model_id="", n_ctx=512,
                  n_gpu_layers=0, threads=0)
    inputs.update(kw)
    return {"class_type": "LeanLLMLoader", "inputs": inputs}


def llm_prompt(link=("l", 0), **kw):
    inputs = dict(llm=list(link), idea="a red fox in the snow", style="SD1.5 tags", system_prompt="", seed=1,
                  max_tokens=4, temperature=0.7, top_p=0.9, keep_loaded=True)
    inputs.update(kw)
    return {"class_type": "LeanLLMPrompt", "inputs": inputs}


def llm_graph(loader=None, **prompt_kw):
    return {"l": loader or llm_loader(), "p": llm_prompt(**prompt_kw),
            "v": {"class_type": "PreviewAny", "inputs": {"source": ["p", 0]}}}


def vision_graph(mmproj="vl/" + VL_PROJ, model="vl/" + VL, image=None, **prompt_kw):
    """Local LLM Loader (vision model + mmproj) -> LLM Prompt Writer with an image (Load Image of the photo)."""
    g = llm_graph(llm_loader(model=model, mmproj=mmproj, n_ctx=1024), **dict(dict(idea="", style="tags"), **prompt_kw))
    g["i"] = image or {"class_type": "LoadImage", "inputs": {"image": PHOTO}}
    g["p"]["inputs"]["image"] = ["i", 0]
    return g


CANNY = dict(low_threshold=100, high_threshold=200, auto="off", sigma=0.33, blur=0, aperture="3",
             l2_gradient=False, resolution=0, invert=False)


def canny_graph(source=None, **kw):
    src = source or {"class_type": "LoadImage", "inputs": {"image": PHOTO}}
    return {"s": src, "c": {"class_type": "LeanCanny", "inputs": dict(CANNY, image=["s", 0], **kw)},
            "v": {"class_type": "PreviewAny", "inputs": {"source": ["c", 2]}}}


def bad_image(kind):
    return {"class_type": "TestBadImage_lean", "inputs": {"kind": kind}}


def ckpt_graph(**kw):
    inputs = dict(ckpt_name=SD15, load_mode="mmap", weight_dtype="auto", load_clip=True, load_vae=True)
    inputs.update(kw)
    return _preview({"class_type": "LeanCheckpointLoader", "inputs": inputs}, 3)


def diffusion_model_graph(**kw):
    inputs = dict(unet_name="gone.safetensors", weight_dtype="default", load_mode="mmap")
    inputs.update(kw)
    return _preview({"class_type": "LeanDiffusionModelLoader", "inputs": inputs}, 1)


def text_encoder_graph(**kw):
    inputs = dict(clip_name="gone.safetensors", type="stable_diffusion", device="default", load_mode="mmap",
                  weight_dtype="default")
    inputs.update(kw)
    return _preview({"class_type": "LeanTextEncoderLoader", "inputs": inputs}, 1)


def dual_text_encoder_graph(**kw):
    inputs = dict(clip_name1="gone.safetensors", clip_name2="gone.safetensors", type="flux", device="default",
                  load_mode="mmap", weight_dtype="default")
    inputs.update(kw)
    return _preview({"class_type": "LeanDualTextEncoderLoader", "inputs": inputs}, 1)


def stock_ckpt():
    return {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15}}


def prompt_batch_graph(text="a cat", **kw):
    inputs = dict(clip=["k", 1], text=text, mode="lines", count=16, seed=0, prefix="", suffix="")
    inputs.update(kw)
    return {"k": stock_ckpt(), "n": {"class_type": "LeanPromptBatch", "inputs": inputs},
            "v": {"class_type": "PreviewAny", "inputs": {"source": ["n", 2]}}}


def lora_loader_graph(**kw):
    inputs = dict(model=["k", 0], clip=["k", 1], lora_name=LORA, strength_model=1.0, strength_clip=1.0,
                  schedule="", block_weights="")
    inputs.update(kw)
    return {"k": stock_ckpt(), "n": {"class_type": "LeanLoraLoader", "inputs": inputs},
            "v": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}}


def lora_tags_graph(text):
    return {"k": stock_ckpt(),
            "n": {"class_type": "LeanLoraTags", "inputs": {"model": ["k", 0], "clip": ["k", 1], "text": text}},
            "v": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}}


def ckpt_part_off_graph(part):
    """LeanCheckpointLoader with load_vae (or load_clip) off, whose VAE (CLIP) is then used by a stock node."""
    g = {"k": {"class_type": "LeanCheckpointLoader", "inputs": dict(ckpt_name=SD15, load_mode="mmap",
                                                                     weight_dtype="auto", load_clip=part != "clip",
                                                                     load_vae=part != "vae")}}
    if part == "vae":
        g["e"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        g["d"] = {"class_type": "VAEDecode", "inputs": {"samples": ["e", 0], "vae": ["k", 2]}}
        g["v"] = {"class_type": "PreviewImage", "inputs": {"images": ["d", 0]}}
    else:
        g["t"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["k", 1]}}
        g["v"] = {"class_type": "PreviewAny", "inputs": {"source": ["t", 0]}}
    return g


def good_prompt(i, nodes, llm_ok=True):
    """A cheap prompt that must succeed after every bad case (a Lean node when one is there)."""
    if "LeanLLMLoader" in nodes and llm_ok:
        return llm_graph(seed=1000 + i, max_tokens=2)
    if "LeanCanny" in nodes:
        return canny_graph(low_threshold=i % 100)
    return {"e": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": i}},
            "v": {"class_type": "PreviewImage", "inputs": {"images": ["e", 0]}}}


# ------------------------------------------------------------------------------------------ the catalogue

@dataclasses.dataclass
class Case:
    id: str
    node: str                 # the Lean node under test
    what: str                 # what is wrong, in words
    prompt: object            # () -> API prompt
    expect: tuple             # words that must all appear in the error (case-insensitive)
    needs: tuple = ()         # other node ids the prompt uses (besides stock ones)
    host: str = "main"        # "main", or "no_llama_cpp" (a host where `import llama_cpp` fails)
    stage: str = "any"        # "validation", "execution" or "any"


def _c(*a, **k):
    return Case(*a, **k)


NUL = "tiny\x00.gguf"

# Lean nodes with no inputs at all, so nothing a prompt can get wrong; what they read is tested where named.
NO_INPUT_NODES = {
    "LeanSystemCheck": "reads the model folders: corrupt and truncated files there are reported on its text, not "
                       "raised (tests/test_tier2_doctor.py::test_system_check_node_runs_in_the_host, in the host "
                       "that holds this catalogue's files)",
}

CASES = [
    # ---- LeanLLMLoader / LeanLLMPrompt
    _c("llm-missing-file", "LeanLLMLoader", "a model file that is not there", lambda: llm_graph(llm_loader(model="gone.gguf")),
       ("model", "gone.gguf"), stage="validation"),
    _c("llm-zero-bytes", "LeanLLMLoader", "a zero-byte .gguf", lambda: llm_graph(llm_loader(model="zero_bytes.gguf")),
       ("zero_bytes.gguf",)),
    _c("llm-not-gguf", "LeanLLMLoader", "a text file named .gguf", lambda: llm_graph(llm_loader(model="not_gguf.gguf")),
       ("not_gguf.gguf", "not a gguf")),
    _c("llm-renamed-safetensors", "LeanLLMLoader", "a safetensors LoRA renamed to .gguf",
       lambda: llm_graph(llm_loader(model="renamed_safetensors.gguf")), ("renamed_safetensors.gguf", "not a gguf")),
    _c("llm-truncated-header", "LeanLLMLoader", "a GGUF cut inside its header",
       lambda: llm_graph(llm_loader(model="truncated_header.gguf")), ("truncated_header.gguf", "truncated")),
    _c("llm-truncated-tensors", "LeanLLMLoader", "a GGUF cut inside its tensor data",
       lambda: llm_graph(llm_loader(model="truncated_tensors.gguf")), ("truncated_tensors.gguf",)),
    _c("llm-unknown-arch", "LeanLLMLoader", "a GGUF of an architecture llama.cpp does not know",
       lambda: llm_graph(llm_loader(model="unknown_arch.gguf")), ("unknown_arch.gguf", "lean_nonexistent_arch")),
    _c("llm-dotdot", "LeanLLMLoader", "a model name with ../", lambda: llm_graph(llm_loader(model="../../secret_outside.txt")),
       ("model", "../../secret_outside.txt"), stage="validation"),
    _c("llm-absolute", "LeanLLMLoader", "an absolute model path",
       lambda: llm_graph(llm_loader(model=str(tiny_gguf.tiny_model("chatml")))), ("model", "not in"), stage="validation"),
    _c("llm-nul", "LeanLLMLoader", "a NUL byte in the model name", lambda: llm_graph(llm_loader(model=NUL)),
       ("model", "not in"), stage="validation"),
    _c("llm-long-name", "LeanLLMLoader", "a 5000-character model name", lambda: llm_graph(llm_loader(model=LONG + ".gguf")),
       ("model", "not in"), stage="validation"),
    _c("llm-n_ctx-too-big", "LeanLLMLoader", "n_ctx over its maximum", lambda: llm_graph(llm_loader(n_ctx=10 ** 9)),
       ("n_ctx", "max"), stage="validation"),
    _c("llm-n_ctx-too-small", "LeanLLMLoader", "n_ctx under its minimum", lambda: llm_graph(llm_loader(n_ctx=1)),
       ("n_ctx", "min"), stage="validation"),
    _c("llm-backend-unknown", "LeanLLMLoader", "a backend that does not exist",
       lambda: llm_graph(llm_loader(backend="torch")), ("backend", "torch"), stage="validation"),
    _c("llm-base_url-not-http", "LeanLLMLoader", "a base_url that is not http(s)",
       lambda: llm_graph(llm_loader(backend="openai", base_url="file:///etc/passwd")), ("base_url", "file:///etc/passwd")),
    _c("llm-base_url-nul", "LeanLLMLoader", "a NUL byte in base_url",
       lambda: llm_graph(llm_loader(backend="openai", base_url="http://127.0.0.1:9/v1\x00evil")), ("base_url",)),
    _c("llm-base_url-down", "LeanLLMLoader", "a base_url where no server listens",
       lambda: llm_graph(llm_loader(backend="openai", base_url="http://127.0.0.1:9/v1")), ("127.0.0.1:9", "cannot reach")),
    _c("llm-max_tokens-zero", "LeanLLMPrompt", "max_tokens 0", lambda: llm_graph(max_tokens=0),
       ("max_tokens", "min"), stage="validation"),
    _c("llm-max_tokens-huge", "LeanLLMPrompt", "max_tokens over its maximum", lambda: llm_graph(max_tokens=10 ** 7),
       ("max_tokens", "max"), stage="validation"),
    _c("llm-temperature-negative", "LeanLLMPrompt", "a negative temperature", lambda: llm_graph(temperature=-1.0),
       ("temperature",), stage="validation"),
    _c("llm-style-unknown", "LeanLLMPrompt", "a style that does not exist", lambda: llm_graph(style="../../etc"),
       ("style",), stage="validation"),
    _c("llm-idea-too-long", "LeanLLMPrompt", "an idea longer than the context",
       lambda: llm_graph(llm_loader(n_ctx=256), idea="a red fox " * 3000), ("n_ctx",)),
    _c("llm-llm-not-handle", "LeanLLMPrompt", "a STRING wired into the llm input",
       lambda: {"s": {"class_type": "PrimitiveString", "inputs": {"value": "x"}}, "p": llm_prompt(("s", 0)),
                "v": {"class_type": "PreviewAny", "inputs": {"source": ["p", 0]}}}, ("llm",), stage="validation"),
    _c("llm-no-llama-cpp", "LeanLLMLoader", "llama-cpp-python not installed (import fails)", lambda: llm_graph(),
       ("llama-cpp-python", "pip install"), host="no_llama_cpp"),

    # ---- LeanCanny
    _c("canny-empty-batch", "LeanCanny", "an empty image batch", lambda: canny_graph(bad_image("empty_batch")),
       ("empty",), needs=("TestBadImage_lean",)),
    _c("canny-1x1", "LeanCanny", "a 1x1 image", lambda: canny_graph(bad_image("1x1")), ("too small",),
       needs=("TestBadImage_lean",)),
    _c("canny-2-channels", "LeanCanny", "an image with 2 channels", lambda: canny_graph(bad_image("2_channels")),
       ("channel",), needs=("TestBadImage_lean",)),
    _c("canny-rank-5", "LeanCanny", "a 5-d tensor as the image", lambda: canny_graph(bad_image("rank_5")),
       ("image", "shape"), needs=("TestBadImage_lean",)),
    _c("canny-int64", "LeanCanny", "an int64 tensor as the image", lambda: canny_graph(bad_image("int64")),
       ("image", "dtype"), needs=("TestBadImage_lean",)),
    _c("canny-threshold-over", "LeanCanny", "low_threshold over 255", lambda: canny_graph(low_threshold=300),
       ("low_threshold", "max"), stage="validation"),
    _c("canny-threshold-negative", "LeanCanny", "a negative high_threshold", lambda: canny_graph(high_threshold=-5),
       ("high_threshold", "min"), stage="validation"),
    _c("canny-blur-even", "LeanCanny", "an even blur kernel", lambda: canny_graph(blur=4), ("blur", "odd")),
    _c("canny-aperture", "LeanCanny", "an aperture OpenCV does not have", lambda: canny_graph(aperture="9"),
       ("aperture",), stage="validation"),
    _c("canny-resolution-odd", "LeanCanny", "a resolution that is not a multiple of 8",
       lambda: canny_graph(resolution=1001), ("resolution",)),
    _c("canny-resolution-huge", "LeanCanny", "a resolution over the maximum", lambda: canny_graph(resolution=10 ** 6),
       ("resolution", "max"), stage="validation"),
    _c("canny-auto-unknown", "LeanCanny", "an auto mode that does not exist", lambda: canny_graph(auto="magic"),
       ("auto",), stage="validation"),
    _c("canny-missing-image", "LeanCanny", "an input image that is not there",
       lambda: canny_graph({"class_type": "LoadImage", "inputs": {"image": "../../secret_outside.txt"}}),
       ("image",), stage="validation"),

    # ---- LeanPromptBatch
    _c("pb-empty", "LeanPromptBatch", "an empty prompt list (only comments)",
       lambda: prompt_batch_graph("# nothing\n\n"), ("empty",)),
    _c("pb-wildcard-cycle", "LeanPromptBatch", "wildcards that reference each other",
       lambda: prompt_batch_graph("a __cycle_a__"), ("cycle", "__cycle_a__")),
    _c("pb-wildcard-self", "LeanPromptBatch", "a wildcard that references itself",
       lambda: prompt_batch_graph("a __self_ref__"), ("cycle", "__self_ref__")),
    _c("pb-wildcard-dotdot", "LeanPromptBatch", "a wildcard name with ../",
       lambda: prompt_batch_graph("a __../secret_outside__"), ("../secret_outside",)),
    _c("pb-wildcard-absolute", "LeanPromptBatch", "an absolute wildcard name",
       lambda: prompt_batch_graph("a __/etc/passwd__"), ("/etc/passwd",)),
    _c("pb-wildcard-symlink-out", "LeanPromptBatch", "a wildcard file that is a symlink pointing outside",
       lambda: prompt_batch_graph("a __escape__"), ("__escape__", "outside")),
    _c("pb-wildcard-missing", "LeanPromptBatch", "a wildcard that does not exist",
       lambda: prompt_batch_graph("a __no_such_list__"), ("__no_such_list__",)),
    _c("pb-wildcard-empty", "LeanPromptBatch", "a wildcard file with no lines",
       lambda: prompt_batch_graph("a __only_comments__"), ("__only_comments__",)),
    _c("pb-unclosed-brace", "LeanPromptBatch", "a {choice that is never closed",
       lambda: prompt_batch_graph("a {red|blue cat"), ("never closed",)),
    _c("pb-combinatorial-over", "LeanPromptBatch", "more combinations than count",
       lambda: prompt_batch_graph("{a|b|c} {d|e|f} {g|h|i}", mode="combinatorial", count=4), ("count",)),
    _c("pb-count-zero", "LeanPromptBatch", "count 0", lambda: prompt_batch_graph(count=0), ("count", "min"),
       stage="validation"),
    _c("pb-count-huge", "LeanPromptBatch", "count over the maximum", lambda: prompt_batch_graph(count=10 ** 6),
       ("count", "max"), stage="validation"),
    _c("pb-text-file-dotdot", "LeanPromptBatch", "a text_file with ../",
       lambda: prompt_batch_graph(text_file="../secret_outside.txt"), ("text_file",), stage="validation"),
    _c("pb-nul", "LeanPromptBatch", "a NUL byte in a wildcard name", lambda: prompt_batch_graph("a __cycle\x00_a__"),
       ("wildcard",)),
    # per-image LoRA tags (issue 23): the error names the prompt (its number in the whole batch) and the tag
    _c("pb-lora-tag-bad-number", "LeanPromptBatch", "a per-image LoRA tag whose strength is not a number",
       lambda: prompt_batch_graph("a cat\na dog <lora:x:abc>"), ("prompt 2", "not a number")),
    _c("pb-lora-tag-unknown", "LeanPromptBatch", "a per-image LoRA tag naming no file of the loras folder",
       lambda: prompt_batch_graph("a cat <lora:no_such_lora:0.5>", model=["k", 0]), ("prompt 1", "no_such_lora")),
    _c("pb-lora-tag-no-model", "LeanPromptBatch", "a per-image LoRA tag with a UNet strength and no model wired",
       lambda: prompt_batch_graph(f"a cat\na dog <lora:{LORA.rsplit('.', 1)[0]}:0.5>"),
       ("prompt 2", "no model is connected")),
    _c("pb-lora-tag-lbw-unknown", "LeanPromptBatch", "a per-image LoRA tag with an unknown lbw= preset",
       lambda: prompt_batch_graph(f"a cat <lora:{LORA.rsplit('.', 1)[0]}:0.5:lbw=NOPE>", model=["k", 0]),
       ("prompt 1", "NOPE")),

    # ---- LeanCheckpointLoader
    _c("ckpt-missing", "LeanCheckpointLoader", "a checkpoint that is not there", lambda: ckpt_graph(ckpt_name="gone.safetensors"),
       ("ckpt_name", "gone.safetensors"), stage="validation"),
    _c("ckpt-zero-bytes", "LeanCheckpointLoader", "a zero-byte safetensors",
       lambda: ckpt_graph(ckpt_name="zero_bytes.safetensors"), ("zero_bytes.safetensors",)),
    _c("ckpt-truncated", "LeanCheckpointLoader", "a safetensors cut in half",
       lambda: ckpt_graph(ckpt_name="truncated.safetensors"), ("truncated.safetensors",)),
    _c("ckpt-corrupt-header", "LeanCheckpointLoader", "a header length past the end of the file",
       lambda: ckpt_graph(ckpt_name="corrupt_header.safetensors"), ("corrupt_header.safetensors",)),
    _c("ckpt-not-json", "LeanCheckpointLoader", "a header that is not JSON",
       lambda: ckpt_graph(ckpt_name="not_json.safetensors"), ("not_json.safetensors",)),
    _c("ckpt-evil-zip", "LeanCheckpointLoader", "a .ckpt whose unpickling runs code",
       lambda: ckpt_graph(ckpt_name="evil.ckpt"), ("evil.ckpt",)),
    _c("ckpt-evil-legacy", "LeanCheckpointLoader", "a legacy pickle whose unpickling runs code",
       lambda: ckpt_graph(ckpt_name="evil_legacy.pt"), ("evil_legacy.pt",)),
    _c("ckpt-lora-not-checkpoint", "LeanCheckpointLoader", "a LoRA picked as a checkpoint",
       lambda: ckpt_graph(ckpt_name="lora_not_checkpoint.safetensors"), ("lora_not_checkpoint.safetensors", "lora")),
    _c("ckpt-dotdot", "LeanCheckpointLoader", "a checkpoint name with ../",
       lambda: ckpt_graph(ckpt_name="../loras/" + LORA), ("ckpt_name",), stage="validation"),
    _c("ckpt-absolute", "LeanCheckpointLoader", "an absolute checkpoint path",
       lambda: ckpt_graph(ckpt_name="/etc/passwd"), ("ckpt_name", "/etc/passwd"), stage="validation"),
    _c("ckpt-nul", "LeanCheckpointLoader", "a NUL byte in the checkpoint name",
       lambda: ckpt_graph(ckpt_name=SD15 + "\x00.txt"), ("ckpt_name",), stage="validation"),
    _c("ckpt-dtype-unknown", "LeanCheckpointLoader", "a weight dtype that does not exist",
       lambda: ckpt_graph(weight_dtype="fp64"), ("weight_dtype",), stage="validation"),
    _c("ckpt-vae-off-used", "LeanCheckpointLoader", "the VAE output used while load_vae is off",
       lambda: ckpt_part_off_graph("vae"), ("load_vae",)),

    # ---- LeanDiffusionModelLoader
    _c("dm-missing", "LeanDiffusionModelLoader", "a diffusion model that is not there",
       lambda: diffusion_model_graph(unet_name="gone.safetensors"), ("unet_name", "gone.safetensors"), stage="validation"),
    _c("dm-zero-bytes", "LeanDiffusionModelLoader", "a zero-byte safetensors",
       lambda: diffusion_model_graph(unet_name="zero_bytes.safetensors"), ("zero_bytes.safetensors",)),
    _c("dm-truncated", "LeanDiffusionModelLoader", "a safetensors cut in half",
       lambda: diffusion_model_graph(unet_name="truncated.safetensors"), ("truncated.safetensors", "truncated")),
    _c("dm-corrupt-header", "LeanDiffusionModelLoader", "a header length past the end of the file",
       lambda: diffusion_model_graph(unet_name="corrupt_header.safetensors"), ("corrupt_header.safetensors",)),
    _c("dm-not-json", "LeanDiffusionModelLoader", "a header that is not JSON",
       lambda: diffusion_model_graph(unet_name="not_json.safetensors"), ("not_json.safetensors",)),
    _c("dm-evil-zip", "LeanDiffusionModelLoader", "a .ckpt whose unpickling runs code",
       lambda: diffusion_model_graph(unet_name="evil.ckpt"), ("evil.ckpt",)),
    _c("dm-lora-not-model", "LeanDiffusionModelLoader", "a LoRA picked as a diffusion model",
       lambda: diffusion_model_graph(unet_name="lora_not_diffusion_model.safetensors"),
       ("lora_not_diffusion_model.safetensors", "lora")),
    _c("dm-dotdot", "LeanDiffusionModelLoader", "a diffusion model name with ../",
       lambda: diffusion_model_graph(unet_name="../loras/" + LORA), ("unet_name",), stage="validation"),
    _c("dm-dtype-unknown", "LeanDiffusionModelLoader", "a weight dtype that does not exist",
       lambda: diffusion_model_graph(unet_name="zero_bytes.safetensors", weight_dtype="fp64"), ("weight_dtype",),
       stage="validation"),

    # ---- LeanTextEncoderLoader
    _c("te-missing", "LeanTextEncoderLoader", "a text encoder that is not there",
       lambda: text_encoder_graph(clip_name="gone.safetensors"), ("clip_name", "gone.safetensors"), stage="validation"),
    _c("te-zero-bytes", "LeanTextEncoderLoader", "a zero-byte safetensors",
       lambda: text_encoder_graph(clip_name="zero_bytes.safetensors"), ("zero_bytes.safetensors",)),
    _c("te-truncated", "LeanTextEncoderLoader", "a safetensors cut in half",
       lambda: text_encoder_graph(clip_name="truncated.safetensors"), ("truncated.safetensors", "truncated")),
    _c("te-corrupt-header", "LeanTextEncoderLoader", "a header length past the end of the file",
       lambda: text_encoder_graph(clip_name="corrupt_header.safetensors"), ("corrupt_header.safetensors",)),
    _c("te-not-json", "LeanTextEncoderLoader", "a header that is not JSON",
       lambda: text_encoder_graph(clip_name="not_json.safetensors"), ("not_json.safetensors",)),
    _c("te-evil-zip", "LeanTextEncoderLoader", "a .ckpt whose unpickling runs code",
       lambda: text_encoder_graph(clip_name="evil.ckpt"), ("evil.ckpt",)),
    _c("te-lora-not-encoder", "LeanTextEncoderLoader", "a LoRA picked as a text encoder",
       lambda: text_encoder_graph(clip_name="lora_not_text_encoder.safetensors"),
       ("lora_not_text_encoder.safetensors", "no text encoder", "lora")),
    _c("te-type-unknown", "LeanTextEncoderLoader", "a type that does not exist",
       lambda: text_encoder_graph(clip_name="zero_bytes.safetensors", type="sd99"), ("type",), stage="validation"),

    _c("dual-missing", "LeanDualTextEncoderLoader", "a second text encoder that is not there",
       lambda: dual_text_encoder_graph(clip_name1="zero_bytes.safetensors", clip_name2="gone.safetensors"),
       ("clip_name2", "gone.safetensors"), stage="validation"),
    _c("dual-zero-bytes", "LeanDualTextEncoderLoader", "a zero-byte first file",
       lambda: dual_text_encoder_graph(clip_name1="zero_bytes.safetensors", clip_name2="truncated.safetensors"),
       ("zero_bytes.safetensors",)),
    _c("dual-lora-not-encoder", "LeanDualTextEncoderLoader", "two LoRAs picked as text encoders",
       lambda: dual_text_encoder_graph(clip_name1="lora_not_text_encoder.safetensors",
                                       clip_name2="lora_not_text_encoder.safetensors"),
       ("lora_not_text_encoder.safetensors", "no text encoder")),

    # ---- LeanLoraLoader / LeanLoraTags
    _c("lora-other-arch", "LeanLoraLoader", "a LoRA made for another architecture (Flux)",
       lambda: lora_loader_graph(lora_name="flux_lora.safetensors"), ("flux_lora.safetensors", "another")),
    _c("lora-not-a-lora", "LeanLoraLoader", "a safetensors holding no LoRA weights",
       lambda: lora_loader_graph(lora_name="not_a_lora.safetensors"), ("not_a_lora.safetensors",)),
    _c("lora-zero-bytes", "LeanLoraLoader", "a zero-byte LoRA", lambda: lora_loader_graph(lora_name="zero_bytes.safetensors"),
       ("zero_bytes.safetensors",)),
    _c("lora-truncated", "LeanLoraLoader", "a LoRA cut in half", lambda: lora_loader_graph(lora_name="truncated.safetensors"),
       ("truncated.safetensors",)),
    _c("lora-corrupt-header", "LeanLoraLoader", "a LoRA whose header length is past its end",
       lambda: lora_loader_graph(lora_name="corrupt_header.safetensors"), ("corrupt_header.safetensors",)),
    _c("lora-evil-zip", "LeanLoraLoader", "a .ckpt LoRA whose unpickling runs code",
       lambda: lora_loader_graph(lora_name="evil.ckpt"), ("evil.ckpt",)),
    _c("lora-evil-legacy", "LeanLoraLoader", "a legacy-pickle LoRA whose unpickling runs code",
       lambda: lora_loader_graph(lora_name="evil_legacy.pt"), ("evil_legacy.pt",)),
    _c("lora-missing", "LeanLoraLoader", "a LoRA that is not there", lambda: lora_loader_graph(lora_name="gone.safetensors"),
       ("lora_name", "gone.safetensors"), stage="validation"),
    _c("lora-dotdot", "LeanLoraLoader", "a LoRA name with ../",
       lambda: lora_loader_graph(lora_name="../checkpoints/" + SD15), ("lora_name",), stage="validation"),
    _c("lora-strength-huge", "LeanLoraLoader", "strength_model far out of range",
       lambda: lora_loader_graph(strength_model=1e9), ("strength_model",), stage="validation"),
    _c("lora-schedule-bad", "LeanLoraLoader", "a schedule with a step fraction over 1",
       lambda: lora_loader_graph(schedule="0:1,2:0.5"), ("schedule",)),
    _c("lora-block-weights-bad", "LeanLoraLoader", "an unknown block-weight preset",
       lambda: lora_loader_graph(block_weights="NOT_A_PRESET"), ("not_a_preset",)),
    _c("lora-block-weights-long", "LeanLoraLoader", "5000 characters of block weights",
       lambda: lora_loader_graph(block_weights=",".join(["1"] * 2500)), ("block",)),
    _c("tags-missing", "LeanLoraTags", "a tag naming a LoRA that is not there",
       lambda: lora_tags_graph("a cat <lora:no_such_lora:0.8>"), ("no_such_lora",)),
    _c("tags-dotdot", "LeanLoraTags", "a tag with ../ in the name",
       lambda: lora_tags_graph("a cat <lora:../checkpoints/lean_sd15:1>"), ("../checkpoints/lean_sd15",)),
    _c("tags-absolute", "LeanLoraTags", "a tag with an absolute path",
       lambda: lora_tags_graph("a cat <lora:/etc/passwd:1>"), ("/etc/passwd",)),
    _c("tags-nul", "LeanLoraTags", "a NUL byte in a tag's name", lambda: lora_tags_graph("a <lora:lean_\x00lora:1>"),
       ("lora",)),
    _c("tags-unclosed", "LeanLoraTags", "a tag never closed", lambda: lora_tags_graph("a cat <lora:lean_lora:0.8"),
       ("closed",)),
    _c("tags-strength-nan", "LeanLoraTags", "a strength that is not a number",
       lambda: lora_tags_graph("a cat <lora:lean_lora:abc>"), ("abc",)),
    _c("tags-evil", "LeanLoraTags", "a tag naming a LoRA whose unpickling runs code",
       lambda: lora_tags_graph("a cat <lora:evil:1>"), ("evil",)),
    _c("tags-other-arch", "LeanLoraTags", "a tag naming a LoRA for another architecture",
       lambda: lora_tags_graph("a cat <lora:flux_lora:1>"), ("flux_lora", "another")),
]


# ---- LeanPromptBatch limits (issue 21, items 2-3): parsers linear, nesting as data, every expansion budgeted
def make_prompt_limit_files(wildcards):
    """Issue 21's wildcard fan-out: fan0 .. fan19 refer to the next one four times on one line, fan20 is `x`."""
    for k in range(20):
        (wildcards / f"fan{k}.txt").write_text(" ".join([f"__fan{k + 1}__"] * 4) + "\n")
    (wildcards / "fan20.txt").write_text("x\n")


# ---- issue 21, LLM (one block): base_url parts a shared workflow must not use, and numbers that arrive through a
# link (ComfyUI applies min/max to widget values only).  The 192.0.2.1, settings, key and endless-stream
# reproductions need fake servers and the offline namespace: tests/test_tier2_llm_servers.py.
def _pb_check_graph(images):
    """A stock EmptyImage batch -> Prompt Batch Check -> PreviewImage (count left unwired)."""
    return {"e": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": images, "color": 0}},
            "chk": {"class_type": "LeanPromptBatchCheck", "inputs": {"images": ["e", 0]}},
            "v": {"class_type": "PreviewImage", "inputs": {"images": ["chk", 0]}}}


def _linked_int(graph, node, name, value):
    """`graph` with input `name` of node `node` fed by a stock PrimitiveInt holding `value`."""
    graph["i"] = {"class_type": "PrimitiveInt", "inputs": {"value": value}}
    graph[node]["inputs"][name] = ["i", 0]
    return graph


CASES += [
    _c("pb-nested-400", "LeanPromptBatch", "400 nested braces (a RecursionError on main)",
       lambda: prompt_batch_graph("{" * 400 + "a" + "}" * 400), ("nest deeper than", "limit")),
    _c("pb-text-over-limit", "LeanPromptBatch", "a 1.1 MB template ('{' + spaces + 'a}')",
       lambda: prompt_batch_graph("{" + " " * 1_100_000 + "a}"), ("1,048,576", "limit")),
    _c("pb-fanout-lines", "LeanPromptBatch", "a 21-file wildcard fan-out (4**20 words per prompt)",
       lambda: prompt_batch_graph("a __fan0__"), ("expansion budget",)),
    _c("pb-fanout-combinatorial", "LeanPromptBatch", "a 21-file wildcard fan-out in combinatorial mode",
       lambda: prompt_batch_graph("a __fan0__", mode="combinatorial"), ("expansion budget",)),
    _c("pb-count-linked-huge", "LeanPromptBatch", "a count of 10**6 through a link (no widget max)",
       lambda: _linked_int(prompt_batch_graph("{a|b}", mode="random"), "n", "count", 10 ** 6), ("count", "4096")),
    _c("pb-seed-linked-negative", "LeanPromptBatch", "a negative seed through a link (no widget min)",
       lambda: _linked_int(prompt_batch_graph("{a|b}", mode="random"), "n", "seed", -5), ("seed", "at least 0")),
    # ---- LeanPromptBatchCheck (after ComfyUI-Distributed's collector; here without it, as a stranger's workflow)
    _c("pbcheck-count-unwired", "LeanPromptBatchCheck", "no count wired in", lambda: _pb_check_graph(2),
       ("count", "not connected")),
    _c("pbcheck-count-mismatch", "LeanPromptBatchCheck", "2 images but a count of 3, outside a distributed run",
       lambda: _linked_int(_pb_check_graph(2), "chk", "count", 3), ("gathered 2", "3 prompt", "batch_size")),
    _c("pbcheck-count-linked-huge", "LeanPromptBatchCheck", "a count of 10**6 through a link (no widget max)",
       lambda: _linked_int(_pb_check_graph(1), "chk", "count", 10 ** 6), ("gathered 1", "1000000 prompt")),
    _c("llm-base_url-userinfo", "LeanLLMLoader", "user:pass@ in base_url",
       lambda: llm_graph(llm_loader(backend="openai", base_url="http://user:secret@127.0.0.1:9/v1")),
       ("base_url", "user:pass@")),
    _c("llm-base_url-query", "LeanLLMLoader", "a query string in base_url (rewrites the request path)",
       lambda: llm_graph(llm_loader(backend="openai", base_url="http://127.0.0.1:9/_cat/indices?x=")),
       ("base_url", "query string")),
    _c("llm-base_url-fragment", "LeanLLMLoader", "a fragment in base_url",
       lambda: llm_graph(llm_loader(backend="openai", base_url="http://127.0.0.1:9/v1#x")), ("base_url", "fragment")),
    _c("llm-n_ctx-linked-huge", "LeanLLMLoader", "n_ctx 10**9 through a link (skips the widget's max)",
       lambda: _linked_int(llm_graph(), "l", "n_ctx", 10 ** 9), ("n_ctx", "131072")),
    _c("llm-threads-linked-negative", "LeanLLMLoader", "threads -5 through a link",
       lambda: _linked_int(llm_graph(), "l", "threads", -5), ("threads", "0 to 512")),
    _c("llm-n_gpu_layers-linked", "LeanLLMLoader", "n_gpu_layers -7 through a link",
       lambda: _linked_int(llm_graph(), "l", "n_gpu_layers", -7), ("n_gpu_layers", "-1 to 1000")),
    _c("llm-max_tokens-linked-huge", "LeanLLMPrompt", "max_tokens 10**7 through a link",
       lambda: _linked_int(llm_graph(), "p", "max_tokens", 10 ** 7), ("max_tokens", "32768")),
    _c("llm-seed-linked-negative", "LeanLLMPrompt", "seed -1 through a link",
       lambda: _linked_int(llm_graph(), "p", "seed", -1), ("seed",)),
]

# ---- issue 25, image to prompt: projectors and images.  Images that are odd but usable (1x1, 8192 x 8192, RGBA,
# grey, a batch of 64) must *work*, so they are not error cases here: tests/test_tier2_llm_vision.py runs them.
CASES += [
    _c("vis-projector-other-model", "LeanLLMLoader", "a projector made for another model (96-wide, model 64)",
       lambda: vision_graph(mmproj="mmproj-other-model.gguf"), ("mmproj-other-model.gguf", "does not fit", "64")),
    _c("vis-projector-corrupt", "LeanLLMLoader", "a projector cut inside its header",
       lambda: vision_graph(mmproj="mmproj-corrupt.gguf"), ("mmproj-corrupt.gguf", "truncated")),
    _c("vis-projector-cut", "LeanLLMLoader", "a projector cut inside its tensor data",
       lambda: vision_graph(mmproj="mmproj-cut.gguf"), ("mmproj-cut.gguf", "could not load projector")),
    _c("vis-projector-is-a-model", "LeanLLMLoader", "a text model named mmproj-*.gguf",
       lambda: vision_graph(mmproj="mmproj-is-a-model.gguf"), ("mmproj-is-a-model.gguf", "not a vision projector")),
    _c("vis-projector-missing", "LeanLLMLoader", "a projector name that is not in the list",
       lambda: vision_graph(mmproj="mmproj-gone.gguf"), ("mmproj", "mmproj-gone.gguf"), stage="validation"),
    _c("vis-projector-dotdot", "LeanLLMLoader", "a projector name with ../",
       lambda: vision_graph(mmproj="../../mmproj-x.gguf"), ("mmproj",), stage="validation"),
    _c("vis-model-cannot-see", "LeanLLMPrompt", "an image for a text model loaded without a projector",
       lambda: vision_graph(model=TINY, mmproj="(none)"), ("cannot see images", "mmproj")),
    _c("vis-describe-without-image", "LeanLLMPrompt", "an image style with no image connected",
       lambda: llm_graph(style="describe for SDXL"), ("describe for SDXL", "no image")),
    _c("vis-image-empty-batch", "LeanLLMPrompt", "an empty image batch",
       lambda: vision_graph(image=bad_image("empty_batch")), ("image", "no pixels"), needs=("TestBadImage_lean",)),
    _c("vis-image-rank-5", "LeanLLMPrompt", "a 5-d tensor as the image",
       lambda: vision_graph(image=bad_image("rank_5")), ("image", "must be an image"), needs=("TestBadImage_lean",)),
]
# ---- end of issue 25
# ---- end of issue 21, LLM


# ------------------------------------------------------------------------------------------ running

@dataclasses.dataclass
class Outcome:
    handled: bool
    stage: str        # "validation", "execution", "success" or "crash"
    text: str
    why: str = ""


def _norm(s):
    return s.lower()


def run_case(host, case, timeout=300):
    prompt = case.prompt()
    status, data = host.queue(prompt)
    if status != 200:
        text = json.dumps(data, ensure_ascii=False) if not isinstance(data, str) else data
        stage = "validation"
    else:
        entry = host.wait(data["prompt_id"], timeout)
        if entry["status"].get("status_str") == "success":
            return Outcome(False, "success", json.dumps(entry.get("outputs"))[:500], "the bad input was accepted")
        text = host.error_text(entry)
        stage = "execution"
        for kind, msg in entry["status"].get("messages", []):
            if kind == "execution_error":
                tb = "".join(msg.get("traceback") or [])
                # a crash inside a stock node fed garbage would be 'handled' too loosely: require the failing
                # node to be the Lean node under test (or a stock consumer of its switched-off output)
                if msg.get("node_type") not in (case.node, "VAEDecode", "CLIPTextEncode"):
                    return Outcome(False, stage, text, f"failed in {msg.get('node_type')}, not in {case.node}: {tb[-800:]}")
    missing = [w for w in case.expect if _norm(w) not in _norm(text)]
    if case.stage != "any" and stage != case.stage:
        return Outcome(False, stage, text, f"expected a {case.stage} error")
    if missing:
        return Outcome(False, stage, text, f"the error does not name {missing}")
    return Outcome(True, stage, text)


# ------------------------------------------------------------------------------------------ snapshots

def snapshot(root, skip=()):
    """{relative path: (size, mtime_ns)} of every file and symlink under root (links not followed)."""
    root = pathlib.Path(root)
    out = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skip]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip:
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def diff(before, after, allow=lambda rel: False):
    """Paths that appeared or changed between two snapshots (deleted ones too), minus allowed ones."""
    changed = []
    for rel, sig in after.items():
        if before.get(rel) != sig and not allow(rel):
            changed.append(("new" if rel not in before else "changed", rel))
    for rel in before.keys() - after.keys():
        if not allow(rel):
            changed.append(("deleted", rel))
    return sorted(changed, key=lambda c: c[1])


FIXTURE_NAME = re.compile(r"^fixtures/lean_[\w.\-]+\.(safetensors|gguf|png)$")


# ------------------------------------------------------------------------------------------ crafted headers (issue 21)
# Safetensors headers that lie, through the Lean loaders.  Main's loader multiplied 1000 dims of 4000 digits for
# 39 s before refusing, and accepted negative dims, overlapping byte ranges and a non-dict __metadata__ (then failed
# later, or not at all, with no word about the header).  The expected words are the shared reader's
# (core/st_header.py); the same files are in tests/test_st_header.py, tier 1.

_HUGE = "9" * 4000
_UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"


def write_header_file(path, header, data=b""):
    """A safetensors file whose JSON header is `header` (a dict, or str/bytes written as they are), then `data`."""
    hb = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + data)
    return path


def tag_frequency_inf_metadata():
    """The issue's LoRA metadata: an ss_tag_frequency count of 1e999 (OverflowError in main's trigger words)."""
    return {"ss_tag_frequency": '{"d": {"t": 1e999}}'}


CRAFTED = {  # name -> (header, data bytes, words the error must hold)
    "crafted_4mb_dims.safetensors": (
        '{"%s": {"dtype": "F32", "shape": [%s], "data_offsets": [0, 4]}}' % (_UNET_KEY, ",".join([_HUGE] * 1000)),
        4, ("1000 dimensions",)),
    "crafted_huge_dims.safetensors": (
        '{"%s": {"dtype": "F32", "shape": [%s], "data_offsets": [0, 4]}}' % (_UNET_KEY, ",".join([_HUGE] * 8)),
        4, ("dimension 0", "4000 digits")),
    "crafted_negative_dims.safetensors": (
        {_UNET_KEY: {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}}, 16, ("dimension 0 is -1",)),
    "crafted_overlap.safetensors": (
        {_UNET_KEY: {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
         "first_stage_model.x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 16, ("overlap tensor",)),
    "crafted_metadata_list.safetensors": (
        {"__metadata__": ["x"], _UNET_KEY: {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 16,
        ("__metadata__", "array")),
}


def write_crafted_headers(folder):
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (header, n, _) in CRAFTED.items():
        out[f"{folder.name}/{name}"] = write_header_file(folder / name, header, b"\x00" * n)
    return out


CASES += [
    _c(f"ckpt-{name[8:-12].replace('_', '-')}", "LeanCheckpointLoader", f"a crafted header: {name[8:-12]}",
       (lambda name=name: ckpt_graph(ckpt_name=name)), (name,) + words, stage="execution")
    for name, (_, _, words) in CRAFTED.items()
] + [
    _c(f"dm-{name[8:-12].replace('_', '-')}", "LeanDiffusionModelLoader", f"a crafted header: {name[8:-12]}",
       (lambda name=name: diffusion_model_graph(unet_name=name)), (name,) + words, stage="execution")
    for name, (_, _, words) in CRAFTED.items() if name in ("crafted_4mb_dims.safetensors",
                                                           "crafted_overlap.safetensors")
]
