"""GPU check (issue 14, item 5), prepared for a machine with an NVIDIA GPU and ComfyUI 0.33.0 (COMFYUI_PATH):
the real DynamicVRAM path, which a CPU-only machine cannot run.  One script, at most ~8 minutes:

1. starts the host WITHOUT --cpu (DynamicVRAM switches itself on where comfy-aimdo works) and reads whether
   it did ("DynamicVRAM support detected and enabled");
2. stock CheckpointLoaderSimple vs LeanCheckpointLoader (mmap, auto), txt2img 256x256, 4 steps: identical
   pixels, the host process's VRAM peak (nvidia-smi, sampled) and RAM peak (VmHWM, reset before each run);
3. LeanLoraLoader on the Lean model with weight_dtype fp16 and bf16 (LoRA branch on CUDA): runs, and the
   image differs from the no-LoRA image (the branch is applied); pixels vs stock LoraLoader reported;
4. a llama.cpp model kept loaded (n_gpu_layers=-1) is unloaded when the host frees memory for the image model
   (comfy.model_management.free_memory through the test probe node); skipped when llama_cpp is missing.

    COMFYUI_PATH=/path/to/ComfyUI-0.33.0 python bench/gpu_dynamic_vram.py

Ends with RESULT lines: RESULT gpu=.. dynamic_vram=0|1 identical=0|1 vram_peak_ratio=.. ram_peak_ratio=..
lora_fp16=ok|fail lora_bf16=ok|fail llm_freed=1|0|skip.
"""
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lean_testlib import graphs, harness, host_caps_node, lora, sd15  # noqa: E402

CKPT = "lean_sd15.safetensors"


class Peaks:
    """VRAM of one process (nvidia-smi, every 0.2 s) and its VmHWM (reset through clear_refs)."""

    def __init__(self, pid):
        self.pid, self.vram, self._stop = pid, 0, None

    def _vram_now(self):
        try:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
        except Exception:
            return 0
        return sum(int(m) for p, m in (line.split(",") for line in out.strip().splitlines() if "," in line)
                   if int(p) == self.pid) * 2**20

    def __enter__(self):
        try:
            pathlib.Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            pass
        self.vram, self._stop = 0, threading.Event()

        def loop():
            while not self._stop.is_set():
                self.vram = max(self.vram, self._vram_now())
                time.sleep(0.2)
        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.ram = 0
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self.ram = int(line.split()[1]) * 1024


def image(host, entry):
    import numpy as np
    from PIL import Image
    files = host.output_files(entry)
    return np.asarray(Image.open(files[-1]))


def lean_graph(prefix, weight_dtype="auto", lora_name=None, stock_lora=False):
    g = graphs.txt2img(ckpt=CKPT, prefix=prefix, width=256, height=256)
    g["5"]["inputs"]["steps"] = 4
    g["1"] = {"class_type": "LeanCheckpointLoader", "inputs": {"ckpt_name": CKPT, "load_mode": "mmap",
                                                               "weight_dtype": weight_dtype, "load_clip": True,
                                                               "load_vae": True}}
    if lora_name:
        cls = "LoraLoader" if stock_lora else "LeanLoraLoader"
        inputs = {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora_name, "strength_model": 1.0,
                  "strength_clip": 1.0}
        if not stock_lora:
            inputs.update(schedule="", block_weights="")
        g["L"] = {"class_type": cls, "inputs": inputs}
        g["5"]["inputs"]["model"] = ["L", 0]
        g["2"]["inputs"]["clip"] = ["L", 1]
        g["3"]["inputs"]["clip"] = ["L", 1]
    return g


def main():
    t_start = time.time()
    path, why = harness.find_host()
    if not path:
        print(f"no ComfyUI host ({why}); set COMFYUI_PATH")
        print("RESULT gpu=none error=no_host")
        return 2
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:
        gpu = "none"
    import tempfile
    base = pathlib.Path(tempfile.mkdtemp(prefix="lean_gpu_"))
    harness.make_base_dir(base)
    host_caps_node.install(base)
    harness.link_model(base, "checkpoints", sd15.sd15_checkpoint(), CKPT)
    harness.link_model(base, "loras", lora.sd15_lora(), "lean_lora.safetensors")
    h = harness.ComfyHost.start(path, base, cpu=False, verbose="INFO")
    res = {"gpu": gpu.replace(" ", "_")}
    try:
        res["dynamic_vram"] = int("DynamicVRAM support detected and enabled" in h.log())
        stock_g = graphs.txt2img(ckpt=CKPT, prefix="gpu_stock", width=256, height=256)
        stock_g["5"]["inputs"]["steps"] = 4
        h.free()
        with Peaks(h.proc.pid) as ps:
            ref = image(h, h.run(stock_g))
        h.free()
        with Peaks(h.proc.pid) as pl:
            entry = h.run(lean_graph("gpu_lean"))
        got = image(h, entry)
        print("[lean report]", entry["outputs"]["1"]["text"][0].replace("\n", " | "))
        res["identical"] = int(bool((got == ref).all()))
        res["vram_peak_ratio"] = round(pl.vram / ps.vram, 3) if ps.vram else "n/a"
        res["ram_peak_ratio"] = round(pl.ram / ps.ram, 3) if ps.ram else "n/a"
        print(f"stock: VRAM peak {ps.vram / 2**30:.2f} GiB, RAM peak {ps.ram / 2**30:.2f} GiB; "
              f"lean: VRAM {pl.vram / 2**30:.2f} GiB, RAM {pl.ram / 2**30:.2f} GiB")
        for dt in ("fp16", "bf16"):
            h.free()
            try:
                plain = image(h, h.run(lean_graph(f"gpu_plain_{dt}", weight_dtype=dt)))
                with_lora = image(h, h.run(lean_graph(f"gpu_lora_{dt}", weight_dtype=dt,
                                                      lora_name="lean_lora.safetensors")))
                stock_lora = image(h, h.run(lean_graph(f"gpu_slora_{dt}", weight_dtype=dt,
                                                       lora_name="lean_lora.safetensors", stock_lora=True)))
                diff = abs(with_lora.astype(int) - stock_lora.astype(int)).max()
                ok = bool((with_lora != plain).any())
                res[f"lora_{dt}"] = "ok" if ok else "fail"
                res[f"lora_{dt}_maxdiff_vs_stock"] = int(diff)
            except Exception as e:
                print(f"lora {dt}: {type(e).__name__}: {e}")
                res[f"lora_{dt}"] = "fail"
        try:
            import llama_cpp  # noqa: F401
            from lean_testlib import tiny_gguf
            harness.link_model(base, "llm", tiny_gguf.tiny_model("chatml"), "tiny.gguf")
            g = graphs.llm_preview(loader=graphs.llm_loader(model="tiny.gguf", n_ctx=512, n_gpu_layers=-1),
                                   idea="a boat", seed=3, max_tokens=4, keep_loaded=True)
            g["f"] = {"class_type": "TestFreeMemory_lean", "inputs": {"name": "freed", "bytes_over_free": 1 << 20,
                                                                      "after": ["p", 0]}}
            h.run(g)
            freed = json.loads((base / "output" / "probe" / "freed.json").read_text())
            print("[free_memory]", freed)
            res["llm_freed"] = int("LeanLLM" in freed["unloaded"])
        except ImportError:
            res["llm_freed"] = "skip"
    finally:
        h.stop()
    res["seconds"] = round(time.time() - t_start)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
