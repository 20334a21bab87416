"""GPU check (issue 14 item 5, issue 24): the real DynamicVRAM path on an NVIDIA GPU, which a CPU-only machine
cannot run.  One command, at most ~8 minutes on one GPU (plus the SD1.5 fixture's generation on a bare machine):

    python bench/gpu_dynamic_vram.py --host 0.33.0|PATH [--rounds 2] [--lora-tol 1e-3]
    python bench/gpu_dynamic_vram.py --host 0.33.0 --smoke      (CPU: the same code paths at tiny size)

1. The host's own torch must see a GPU (else: exit 2, "no GPU"; a CPU run proves nothing here).  The host starts
   WITHOUT --cpu; where its main.py has DynamicVRAM (comfy-aimdo) it must say "DynamicVRAM support detected and
   enabled" (target dynamic_vram=1).  gpu= is the device the host logs ("Device: ...").
2. Stock CheckpointLoaderSimple vs LeanCheckpointLoader (mmap, auto), txt2img 256x256, 4 steps.  Each contender
   runs once to warm up (not counted), then --rounds rounds alternating who goes first (stock first in even
   rounds), models unloaded before every run.  Targets: every image pixel-identical to stock's; the medians of
   the host process's VRAM peak (nvidia-smi, sampled every 0.1 s) and RAM peak (VmHWM, reset before each run)
   <= stock's.
3. LoRA on the Lean model loaded with weight_dtype fp16 and bf16 (the branch runs on CUDA in that dtype):
   LeanLoraLoader vs stock LoraLoader on the same model, strength_model 1, strength_clip 0, the protocol of
   tests/test_tier2_lora.py (64x64, 1 step, cfg 1, denoise 0.2, SaveLatent; latents near 1).  Targets: max
   |Lean - stock| <= --lora-tol (1e-3) and the LoRA's own effect (stock with - without) > 10 x --lora-tol, so a
   LoRA that does nothing cannot pass.
4. A llama.cpp model kept loaded (n_gpu_layers=-1) is unloaded when the host makes room for an image model
   (comfy.model_management.free_memory, through the test probe node).  Target llm_freed=1; without llama_cpp in
   the host's python: llm_freed=skip (the check then fails: nothing proves the LLM part).

Every part's figures are printed as it ends; the last line is always
    RESULT gpu=.. host=.. dynamic_vram=0|1 identical=0|1 vram_peak_ratio=.. ram_peak_ratio=..
           lora_fp16_maxdiff=.. lora_bf16_maxdiff=.. llm_freed=1|0|skip targets=ok|fail failed=<names>|none
           [error=<Type:where>] seconds=..
even when a part raised (error= names it).  Exit 0: every target met; 1: a target missed; 2: no GPU, no host,
or a part could not run.

--smoke (CPU, for CI: the code paths still run): the host starts with --cpu, 64x64, 1 step, no warm-up, one
round, the SD1.5 fixture's narrow variant and its LoRA (lean_testlib.sd15.NARROW), the LLM with n_gpu_layers=0; the
same graphs, comparisons and RESULT keys, targets not checked
(targets=not_checked); exit 0 when every part ran, 2 when one raised.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lean_testlib import graphs, harness, host_caps_node, lora, probe_node, sd15  # noqa: E402

CKPT = "lean_sd15.safetensors"
LORA = "lean_lora.safetensors"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds after the warm-up (default 2)")
    ap.add_argument("--lora-tol", type=float, default=1e-3, help="max |Lean - stock| of the LoRA latents")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny: the code paths run; no targets checked")
    a = ap.parse_args(argv)
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    if a.smoke:
        a.rounds = 1
    return a


class Peaks:
    """VRAM of one process (nvidia-smi, every 0.1 s; 0 without nvidia-smi) and its VmHWM (reset by clear_refs)."""

    def __init__(self, pid, gpu=True):
        self.pid, self.gpu, self.vram, self.ram, self._stop = pid, gpu, 0, 0, None

    def _vram_now(self):
        try:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
        except Exception:
            return 0
        total = 0
        for line in out.strip().splitlines():
            p, _, m = line.partition(",")
            if p.strip().isdigit() and int(p) == self.pid and m.strip().isdigit():
                total += int(m)
        return total * 2**20

    def __enter__(self):
        pathlib.Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM: this run's peak only
        self.vram, self._stop = 0, threading.Event()

        def loop():
            while not self._stop.is_set():
                self.vram = max(self.vram, self._vram_now())
                time.sleep(0.1)
        self._t = threading.Thread(target=loop, daemon=True)
        if self.gpu:
            self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.gpu:
            self._t.join()
            self.vram = max(self.vram, self._vram_now())
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self.ram = int(line.split()[1]) * 1024


def host_torch(path):
    """(cuda available, device name) as the host's own python sees them."""
    py = harness.host_python(path)
    code = ("import json, torch; ok = torch.cuda.is_available(); "
            "print(json.dumps([ok, torch.cuda.get_device_name(0) if ok else 'none']))")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=harness.host_env(str(py)),
                         timeout=300)
    if out.returncode:
        raise RuntimeError(f"the host's python cannot import torch: {out.stderr.strip()[-500:]}")
    ok, name = json.loads(out.stdout.strip().splitlines()[-1])
    return bool(ok), name


def logged_device(log):
    for line in log.splitlines():
        if "Device: " in line:
            return line.split("Device: ", 1)[1].strip()
    return "unknown"


def image(host, entry):
    import numpy as np
    from PIL import Image
    files = host.output_files(entry)
    if not files:
        raise RuntimeError(f"no image saved: {json.dumps(entry.get('outputs'))[:500]}")
    return np.asarray(Image.open(files[-1]))


def latent(host, entry):
    import numpy as np
    from safetensors.torch import load_file
    files = host.output_files(entry, kind="latents")
    if len(files) != 1:
        raise RuntimeError(f"expected one saved latent: {json.dumps(entry.get('outputs'))[:500]}")
    t = load_file(str(files[0]))["latent_tensor"].float().numpy()
    if not np.isfinite(t).all():
        raise RuntimeError("the latent is not finite")
    return t


def txt2img(prefix, lean, size, steps):
    """Stock txt2img; with lean=True its checkpoint loader is LeanCheckpointLoader (mmap, auto)."""
    g = graphs.txt2img(ckpt=CKPT, prefix=prefix, width=size, height=size, steps=steps)
    if lean:
        g["1"] = {"class_type": "LeanCheckpointLoader", "inputs": {"ckpt_name": CKPT, "load_mode": "mmap",
                                                                   "weight_dtype": "auto", "load_clip": True,
                                                                   "load_vae": True}}
    return g


_n = [0]


def lora_graph(weight_dtype, lora_class=None):
    """LeanCheckpointLoader(weight_dtype) -> [LoRA node, strength_model 1, strength_clip 0] -> encode ->
    KSampler (64x64, 1 step, cfg 1, denoise 0.2) -> SaveLatent: latents near 1, where 1e-3 is meaningful."""
    _n[0] += 1
    g = {"ckpt": {"class_type": "LeanCheckpointLoader", "inputs": {
        "ckpt_name": CKPT, "load_mode": "mmap", "weight_dtype": weight_dtype, "load_clip": True, "load_vae": True}}}
    model, clip = ["ckpt", 0], ["ckpt", 1]
    if lora_class:
        inputs = {"model": model, "clip": clip, "lora_name": LORA, "strength_model": 1.0, "strength_clip": 0.0}
        if lora_class == "LeanLoraLoader":
            inputs.update(schedule="", block_weights="")
        g["lora"] = {"class_type": lora_class, "inputs": inputs}
        model, clip = ["lora", 0], ["lora", 1]
    g["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube on a table", "clip": clip}}
    g["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}}
    g["lat"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    g["ks"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["lat", 0], "seed": 7,
        "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.2}}
    g["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0], "filename_prefix": f"gpu_lat{_n[0]}"}}
    return g


def free(h, a):
    """Unload every model and clear the host's cache.  The host's prompt worker applies a /free between prompts, and
    when idle only after its next one: settle=True runs a no-op prompt after it, so the free is done before the
    measured prompt starts; the pause lets the freed memory settle before the peaks are sampled."""
    h.free(settle=True)
    time.sleep(0 if a.smoke else 1.5)  # no peaks are compared in a smoke run


def part_images(h, a, res, gpu):
    size, steps = (64, 1) if a.smoke else (256, 4)
    runs = {"stock": [], "lean": []}
    ref, identical = None, True
    order = [("stock", False), ("lean", False)] if a.smoke else [("stock", True), ("lean", True)]  # warm-ups
    for r in range(a.rounds):
        order += [(k, False) for k in (("stock", "lean") if r % 2 == 0 else ("lean", "stock"))]
    for i, (who, warm) in enumerate(order):
        free(h, a)
        with Peaks(h.proc.pid, gpu) as pk:
            entry = h.run(txt2img(f"gpu_{who}_{i}", who == "lean", size, steps))
        img = image(h, entry)
        if who == "lean" and i < 4 and "1" in entry.get("outputs", {}):
            print("[lean report]", " | ".join(entry["outputs"]["1"].get("text", [""])[0].splitlines()), flush=True)
        if ref is None and who == "stock":
            ref = img
        if not warm:
            runs[who].append((pk.vram, pk.ram, img))
        print(f"  {who:5s}{' (warm-up)' if warm else ''}: VRAM peak {pk.vram / 2**30:.2f} GiB, RAM peak "
              f"{pk.ram / 2**30:.2f} GiB", flush=True)
    for who in runs:
        for _, _, img in runs[who]:
            identical = identical and ref is not None and img.shape == ref.shape and bool((img == ref).all())
    med = {who: (statistics.median(v[0] for v in runs[who]), statistics.median(v[1] for v in runs[who]))
           for who in runs}
    res["identical"] = int(identical)
    res["vram_peak_ratio"] = round(med["lean"][0] / med["stock"][0], 3) if med["stock"][0] else "n/a"
    res["ram_peak_ratio"] = round(med["lean"][1] / med["stock"][1], 3) if med["stock"][1] else "n/a"
    print(f"PART images {size}x{size} {steps} steps, median of {a.rounds}: stock VRAM {med['stock'][0] / 2**30:.2f} "
          f"GiB RAM {med['stock'][1] / 2**30:.2f} GiB; lean VRAM {med['lean'][0] / 2**30:.2f} GiB RAM "
          f"{med['lean'][1] / 2**30:.2f} GiB; identical={identical}", flush=True)


def part_lora(h, a, res, dtype):
    import numpy as np
    free(h, a)
    plain = latent(h, h.run(lora_graph(dtype)))
    stock = latent(h, h.run(lora_graph(dtype, "LoraLoader")))
    lean = latent(h, h.run(lora_graph(dtype, "LeanLoraLoader")))
    res[f"lora_{dtype}_maxdiff"] = float(f"{float(np.abs(lean - stock).max()):.3g}")
    res[f"lora_{dtype}_effect"] = float(f"{float(np.abs(stock - plain).max()):.3g}")
    print(f"PART lora {dtype}: max|lean - stock| {res[f'lora_{dtype}_maxdiff']} (tolerance {a.lora_tol}), LoRA "
          f"effect max|stock - none| {res[f'lora_{dtype}_effect']}", flush=True)


def part_llm(h, a, res, base):
    try:
        import llama_cpp  # noqa: F401  (this is the host's python: --host re-runs the check under it)
    except ImportError:
        res["llm_freed"] = "skip"
        print("PART llm: llama_cpp is not installed in the host's python: not run", flush=True)
        return
    from lean_testlib import tiny_gguf
    harness.link_model(base, "llm", tiny_gguf.tiny_model("chatml"), "tiny.gguf")
    free(h, a)
    g = graphs.llm_preview(loader=graphs.llm_loader(model="tiny.gguf", n_ctx=512, n_gpu_layers=0 if a.smoke else -1),
                           idea="a boat", seed=3, max_tokens=4, keep_loaded=True)
    g["f"] = {"class_type": "TestFreeMemory_lean", "inputs": {"name": "freed", "bytes_over_free": 1 << 20,
                                                              "after": ["p", 0]}}
    h.run(g)
    freed = json.loads((base / "output" / "probe" / "freed.json").read_text())
    res["llm_freed"] = int("LeanLLM" in freed["unloaded"] and "LeanLLM" not in freed["after"])
    print(f"PART llm: free_memory before {freed['before']}, unloaded {freed['unloaded']}, after {freed['after']}",
          flush=True)


def targets(res, a, dynamic_required):
    """Names of the targets missed (the GPU run); every one must be present and met."""
    missed = []
    if dynamic_required and res.get("dynamic_vram") != 1:
        missed.append("dynamic_vram")
    if res.get("identical") != 1:
        missed.append("identical")
    for k in ("vram_peak_ratio", "ram_peak_ratio"):
        if not isinstance(res.get(k), float) or res[k] > 1.0:
            missed.append(k)
    for dt in ("fp16", "bf16"):
        d, e = res.get(f"lora_{dt}_maxdiff"), res.get(f"lora_{dt}_effect")
        if d is None or e is None or d > a.lora_tol or e <= 10 * a.lora_tol:
            missed.append(f"lora_{dt}")
    if res.get("llm_freed") != 1:
        missed.append("llm_freed")
    return missed


def run(a, res, path):
    gpu_ok, name = host_torch(path)
    res["gpu"] = name.replace(" ", "_")
    if not a.smoke and not gpu_ok:
        raise NoGPU(f"the host's torch ({harness.host_python(path)}) sees no CUDA GPU: this check needs one "
                    "(run it where a GPU is lent; --smoke runs its code paths on CPU)")
    base = pathlib.Path(tempfile.mkdtemp(prefix="lean_gpu_"))
    harness.make_base_dir(base)
    host_caps_node.install(base)
    probe_node.install(base)  # the no-op prompt of free(h)
    # --smoke: the narrow SD1.5 fixture and its LoRA (bench/_common.py)
    harness.link_model(base, "checkpoints", sd15.sd15_checkpoint(narrow=a.smoke), CKPT)
    harness.link_model(base, "loras", lora.sd15_lora(narrow=a.smoke), LORA)
    h = harness.ComfyHost.start(path, base, cpu=a.smoke, verbose="INFO")
    try:
        log = h.log()
        res["gpu"] = logged_device(log).replace(" ", "_") if not a.smoke else res["gpu"]
        res["dynamic_vram"] = int("DynamicVRAM support detected and enabled" in log)
        print(f"host {harness.host_version(path)} device {logged_device(log)}; DynamicVRAM "
              f"{'on' if res['dynamic_vram'] else 'off'}", flush=True)
        for step, fn in (("images", lambda: part_images(h, a, res, gpu_ok and not a.smoke)),
                         ("lora_fp16", lambda: part_lora(h, a, res, "fp16")),
                         ("lora_bf16", lambda: part_lora(h, a, res, "bf16")),
                         ("llm", lambda: part_llm(h, a, res, base))):
            try:
                fn()
            except Exception as e:  # the other parts still run; the error is named in RESULT
                msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                print(f"PART {step} FAILED: {type(e).__name__}: {msg}", flush=True)
                print(h.log_tail(40), flush=True)
                res.setdefault("errors", []).append(f"{type(e).__name__}:{step}")
    finally:
        h.stop()


class NoGPU(RuntimeError):
    pass


def main():
    import _common  # bench/ is sys.path[0] when a benchmark runs as a script
    _common.host_from_argv()
    a = parse_args()
    t0 = time.time()
    res = {"gpu": "unknown"}
    code = 0
    path, why = harness.find_host()
    try:
        if not path:
            raise RuntimeError(f"no ComfyUI host ({why}); use --host VERSION|PATH or set COMFYUI_PATH")
        res["host"] = harness.host_version(path)
        run(a, res, path)
    except Exception as e:
        print(f"ERROR: {type(e).__name__}: {e}", flush=True)
        res.setdefault("errors", []).append("no_gpu" if isinstance(e, NoGPU) else f"{type(e).__name__}:setup")
    errors = res.pop("errors", [])
    ran = "identical" in res or any(k.startswith("lora_") for k in res) or "llm_freed" in res
    if a.smoke:
        res["targets"] = "not_checked"
        code = 2 if errors or not ran else 0
    else:
        dynamic_required = bool(path) and "DynamicVRAM support detected" in (pathlib.Path(path) / "main.py").read_text()
        missed = targets(res, a, dynamic_required) if ran else ["nothing_ran"]
        res["targets"] = "fail" if missed or errors else "ok"
        res["failed"] = ",".join(missed) or "none"
        code = 2 if errors or not ran else (1 if missed else 0)
    if errors:
        res["error"] = ",".join(errors)
    if a.smoke:
        res["smoke"] = 1
    res["seconds"] = round(time.time() - t0)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in res.items()), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
