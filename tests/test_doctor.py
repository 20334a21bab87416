"""Tier 1: core/doctor.py.  recommend() on fake device facts (a 24 GB GPU, an 8 GB GPU, CPU only, Apple MPS), the
header readers against the safetensors / gguf packages, and the workflow check.  Expected numbers are worked out by
hand from the rules in docs/doctor.md (headroom max(1 GiB, 10 %), RAM minus 2 GiB, n_ctx 4096 KV + 256 MiB)."""
import json

import pytest

from lean_nodes.core import doctor

GiB = 1 << 30
MiB = 1 << 20


def image(name, diffusion, total=None, dtype="F16", folder="checkpoints"):
    parts = {"diffusion": diffusion, "text_encoder": (total or diffusion) - diffusion} if folder == "checkpoints" else {}
    return {"name": name, "folder": folder, "size": total or diffusion, "bytes": total or diffusion, "dtype": dtype,
            "parts": parts, "format": "safetensors"}


def llm(name="qwen7b-q4_k_m.gguf", layers=28, per_layer=GiB // 8, other=GiB // 2, kv=GiB // 4):
    # kv: KV cache at n_ctx 4096 -> bytes per token = kv / 4096
    return {"name": name, "folder": "llm", "size": layers * per_layer + other, "bytes": layers * per_layer + other,
            "layer_bytes": layers * per_layer, "other_bytes": other, "n_layers": layers, "dtype": "Q4_K",
            "kv_bytes_per_token": kv // 4096, "format": "gguf"}


def lora(name="style.safetensors", size=144 * MiB):
    return {"name": name, "folder": "loras", "size": size, "bytes": size, "dtype": "F16", "format": "safetensors"}


def cuda(total_gib, name="NVIDIA GeForce RTX 3090"):
    return {"kind": "cuda", "index": 0, "name": name, "total": total_gib * GiB, "free": total_gib * GiB - 300 * MiB,
            "compute_capability": "8.6", "runtime": "CUDA 12.4", "driver": None}


def facts(devices, models, ram_gib=32, llama=True, offload=True, host_device=None):
    opt = {"llama_cpp": {"version": "0.3.9", "gpu_offload": offload} if llama else None, "opencv": "4.10.0"}
    return {"devices": devices, "host_device": host_device, "topology": "nvidia-smi not found",
            "cpu": {"cores_logical": 16, "cores_physical": 8, "ram_total": ram_gib * GiB, "ram_free": ram_gib * GiB // 2},
            "disk": {}, "folders": {}, "software": {"optional": opt}, "models": models}


def by_name(rec):
    return {f["name"]: f for f in rec["files"]}


def flags(rec):
    return [f["flag"] for f in rec["flags"]]


def test_24gb_gpu_fits_sdxl_and_a_7b_llm_together():
    # usable = 24 - 2.4 = 21.6 GiB; image 4 GiB (diffusion part of a 6.5 GiB checkpoint); LLM 4 GiB + 0.5 GiB
    rec = doctor.recommend(facts([cuda(24)], [image("sdxl.safetensors", 4 * GiB, int(6.5 * GiB)), llm(), lora()]))
    f = by_name(rec)
    assert f["sdxl.safetensors"]["status"] == doctor.FIT
    assert f["sdxl.safetensors"]["weight"] == 4 * GiB  # the diffusion part, not the whole file
    assert f["style.safetensors"]["status"] == doctor.FIT
    q = f["qwen7b-q4_k_m.gguf"]
    assert q["status"] == doctor.FIT and q["n_gpu_layers"] == -1 and q["n_gpu_layers_beside"] == -1
    assert q["together"] is True and q["keep_loaded"] is True
    assert q["gpu_bytes"] == 4 * GiB + GiB // 4 + 256 * MiB
    # llama.cpp's 4.5 GiB are invisible to ComfyUI: reserve them (rounded up to 0.5 GiB)
    assert flags(rec) == ["--reserve-vram 4.5"]
    assert rec["problems"] == []
    assert rec["usable_vram"] == 24 * GiB - 24 * GiB // 10


def test_24gb_gpu_and_a_flux_sized_model_needs_lowvram():
    rec = doctor.recommend(facts([cuda(24)], [image("flux1-dev.safetensors", 23 * GiB, folder="diffusion_models"),
                                              llm()]))
    f = by_name(rec)
    assert f["flux1-dev.safetensors"]["status"] == doctor.LOWVRAM
    assert "--lowvram" in flags(rec)
    q = f["qwen7b-q4_k_m.gguf"]
    # alone it fits; beside 23 GiB nothing is left (21.6 - 23 < 0): no layer, keep_loaded=false
    assert q["n_gpu_layers"] == -1 and q["n_gpu_layers_beside"] == 0 and q["keep_loaded"] is False
    assert "keep_loaded=false" in q["why"]
    assert not any(x.startswith("--reserve-vram") for x in flags(rec))


def test_8gb_gpu_partial_offload_beside_the_image_model():
    # usable = 8 - 1 = 7 GiB; image 4 GiB -> 3 GiB left; LLM needs 4 + 0.5: not together.
    # layers beside = floor((3 - 0.5 extra - 0.5 other) / 0.125) = 16
    rec = doctor.recommend(facts([cuda(8, "NVIDIA GeForce RTX 3070")], [image("sd15.safetensors", 4 * GiB), llm()],
                                 ram_gib=16))
    q = by_name(rec)["qwen7b-q4_k_m.gguf"]
    assert q["n_gpu_layers"] == -1
    assert q["n_gpu_layers_beside"] == 16
    assert q["together"] is False and q["keep_loaded"] is False
    assert by_name(rec)["sd15.safetensors"]["status"] == doctor.FIT
    assert flags(rec) == []


def test_8gb_gpu_with_a_14b_llm_splits_layers_and_fp32_counts_half():
    big = llm("qwen14b.gguf", layers=48, per_layer=GiB // 4, other=GiB)  # 13 GiB
    sd = image("sd15-fp32.safetensors", 3 * GiB, 4 * GiB, dtype="F32")  # ComfyUI holds it in fp16 on the GPU
    rec = doctor.recommend(facts([cuda(8)], [sd, big], ram_gib=32))
    f = by_name(rec)
    assert f["sd15-fp32.safetensors"]["weight"] == 3 * GiB // 2
    q = f["qwen14b.gguf"]
    # alone: floor((7 - 0.5 - 1) / 0.25) = 22 layers; beside 1.5 GiB: floor((5.5 - 0.5 - 1)/0.25) = 16
    assert (q["status"], q["n_gpu_layers"], q["n_gpu_layers_beside"]) == (doctor.LOWVRAM, 22, 16)
    assert q["keep_loaded"] is False


def test_cpu_only():
    rec = doctor.recommend(facts([], [image("sd15.safetensors", 2 * GiB, 4 * GiB), llm(),
                                      image("huge.safetensors", 20 * GiB, folder="diffusion_models")], ram_gib=16))
    f = by_name(rec)
    assert flags(rec) == ["--cpu"]
    assert f["sd15.safetensors"]["status"] == doctor.CPU
    assert f["huge.safetensors"]["status"] == doctor.TOO_BIG  # 20 GiB > 16 - 2
    q = f["qwen7b-q4_k_m.gguf"]
    assert (q["status"], q["n_gpu_layers"]) == (doctor.CPU, 0)
    assert len(rec["problems"]) == 1 and "huge.safetensors" in rec["problems"][0]
    assert rec["device"] is None


def test_comfyui_on_cpu_despite_a_gpu_gets_cpu_advice():
    rec = doctor.recommend(facts([cuda(24)], [image("sd15.safetensors", 2 * GiB)], host_device={"device": "cpu"}))
    assert flags(rec) == ["--cpu"] and "ComfyUI runs on the CPU" in rec["flags"][0]["why"]
    assert by_name(rec)["sd15.safetensors"]["status"] == doctor.CPU


def test_mps_unified_memory():
    mps = {"kind": "mps", "index": 0, "name": "Apple MPS (arm64)", "total": 21 * GiB, "free": None, "unified": True}
    rec = doctor.recommend(facts([mps], [image("sdxl.safetensors", 5 * GiB, 7 * GiB), llm()], ram_gib=32))
    f = by_name(rec)
    assert "--cpu" not in flags(rec)
    assert f["sdxl.safetensors"]["status"] == doctor.FIT  # 5 <= 21 - 2.1
    assert f["qwen7b-q4_k_m.gguf"]["together"] is True
    assert any("unified memory" in n for n in rec["notes"])


def test_cpu_only_llama_build_on_a_gpu_machine():
    rec = doctor.recommend(facts([cuda(24)], [llm()], offload=False))
    q = by_name(rec)["qwen7b-q4_k_m.gguf"]
    assert (q["status"], q["n_gpu_layers"]) == (doctor.CPU, 0)
    assert any("CPU-only build" in n for n in rec["notes"])


def test_gguf_without_llama_cpp_is_a_note():
    rec = doctor.recommend(facts([cuda(24)], [llm()], llama=False))
    assert any("llama-cpp-python is not installed" in n for n in rec["notes"])


def test_unreadable_header_is_a_problem():
    bad = {"name": "broken.safetensors", "folder": "checkpoints", "size": 10, "bytes": 10, "dtype": None,
           "error": "unreadable header: ValueError: too short"}
    rec = doctor.recommend(facts([cuda(8)], [bad]))
    assert by_name(rec)["broken.safetensors"]["status"] == "unreadable"
    assert rec["problems"] == ["checkpoints/broken.safetensors: unreadable header: ValueError: too short"]


# ---------------------------------------------------------------------------- header readers (real files)

def test_safetensors_summary_against_the_tensors_written(tmp_path):
    import torch
    from safetensors.torch import save_file
    t = {"model.diffusion_model.a": torch.zeros(64, 32, dtype=torch.float16),
         "model.diffusion_model.b": torch.zeros(10, dtype=torch.float32),
         "first_stage_model.c": torch.zeros(7, 3, dtype=torch.bfloat16),
         "cond_stage_model.d": torch.zeros(5, dtype=torch.int64)}
    p = tmp_path / "x.safetensors"
    save_file(t, str(p), metadata={"k": "v"})
    s = doctor.read_model(str(p), "checkpoints")
    nb = {k: v.numel() * v.element_size() for k, v in t.items()}
    assert s["bytes"] == sum(nb.values())
    assert s["parts"] == {"diffusion": nb["model.diffusion_model.a"] + nb["model.diffusion_model.b"],
                          "vae": nb["first_stage_model.c"], "text_encoder": nb["cond_stage_model.d"]}
    assert s["dtype"] == "F16" and s["tensors"] == 4


def test_corrupt_safetensors_is_reported_not_raised(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\xff" * 8 + b"{}")
    s = doctor.read_model(str(p), "checkpoints")
    assert "unreadable header" in s["error"]


def test_gguf_summary_against_the_gguf_package():
    gguf = pytest.importorskip("gguf")
    from lean_testlib import tiny_gguf
    path = tiny_gguf.tiny_model(qtype="Q8_0")
    s = doctor.read_model(str(path), "llm")
    r = gguf.GGUFReader(str(path))
    field = r.fields["qwen2.block_count"]
    assert s["n_layers"] == int(field.parts[field.data[0]][0])
    ref_layers = sum(int(t.n_bytes) for t in r.tensors if t.name.startswith("blk."))
    ref_all = sum(int(t.n_bytes) for t in r.tensors)
    # offsets-based sizes include the alignment padding between tensors (at most 31 bytes each)
    assert 0 <= s["layer_bytes"] - ref_layers <= 32 * len(r.tensors)
    assert 0 <= s["bytes"] - ref_all <= 32 * len(r.tensors)
    by_type = {}
    for t in r.tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
    assert s["dtype"] == max(by_type, key=by_type.get)
    assert s["architecture"] == "qwen2" and s["kv_bytes_per_token"] > 0


# ------------------------------------------------------------------------------------------- workflows

def test_workflow_check_api_and_ui_formats():
    index = {"sd15.safetensors": ("checkpoints", "/m/checkpoints/sd15.safetensors"),
             "sub/lora.safetensors": ("loras", "/m/loras/sub/lora.safetensors")}
    api = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
           "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "sub\\lora.safetensors", "model": ["1", 0]}},
           "3": {"class_type": "SomePackNode", "inputs": {"vae_name": "missing.pt"}}}
    out = doctor.check_workflow(api, index, node_types={"CheckpointLoaderSimple", "LoraLoader"}, node_source="x")
    assert out["missing_nodes"] == ["SomePackNode"]
    assert [f["found"] for f in out["files"]] == [True, True, False]
    assert len(out["problems"]) == 2
    ui = {"nodes": [{"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["sd15.safetensors"]},
                    {"id": 5, "type": "Note", "widgets_values": ["see x.safetensors"]},
                    {"id": 6, "type": "abcd-subgraph", "widgets_values": []}],
          "links": [], "definitions": {"subgraphs": [{"id": "abcd-subgraph", "name": "g", "nodes": [
              {"id": 1, "type": "LeanLoraLoader", "widgets_values": ["sub/lora.safetensors", 1.0, 1.0, "", ""]}]}]}}
    out = doctor.check_workflow(ui, index, node_types=None)
    assert out["nodes_checked"] is False and out["missing_nodes"] == []
    assert out["node_types"] == ["CheckpointLoaderSimple", "LeanLoraLoader"]
    assert [(f["node"], f["found"]) for f in out["files"]] == [("4", True), ("g/1", True)]
    assert out["problems"] == []


def test_not_a_workflow():
    with pytest.raises(ValueError):
        doctor.workflow_nodes([1, 2])


def test_text_rendering_names_every_section():
    rep = doctor.build_report(facts([cuda(8)], [image("sd15.safetensors", 4 * GiB), llm()]))
    text = doctor.render_text(rep)
    for s in ("-- Hardware", "-- Software", "-- What fits", "cuda:0 NVIDIA GeForce RTX 3090", "compute capability 8.6",
              "sd15.safetensors", "qwen7b-q4_k_m.gguf", "-- Result: OK"):
        assert s in text, s
    json.dumps(rep)  # JSON-serialisable as it is


def test_projectors_are_listed_with_the_models_they_pair_with(tmp_path):
    """Issue 25: a vision projector (mmproj) in models/llm is not an LLM to fit: the report says what it is and which
    language models of the folder it pairs with (its output width = the model's hidden size, read from both
    headers; the tiny fixtures: a 64-wide qwen2vl model, a 64-wide and a 96-wide qwen2vl_merger projector)."""
    from lean_testlib import tiny_gguf, tiny_vision
    files = {"vl.gguf": tiny_vision.text_model(), "mmproj-vl.gguf": tiny_vision.projector(),
             "mmproj-other.gguf": tiny_vision.projector(n_embd_out=96), "text.gguf": tiny_gguf.tiny_model("chatml")}
    models = []
    for name, path in files.items():
        item = doctor.read_model(str(path), "llm")
        item["name"] = name
        models.append(item)
    fit = doctor.recommend(facts([], models))
    rows = {f["name"]: f for f in fit["files"]}
    assert rows["mmproj-vl.gguf"]["status"] == doctor.PROJECTOR
    # the tiny text model is 64 wide as well (qwen2): width is all the header tells, so it pairs too
    assert rows["mmproj-vl.gguf"]["pairs_with"] == ["vl.gguf", "text.gguf"]
    assert "type qwen2vl_merger: pairs with vl.gguf, text.gguf" in rows["mmproj-vl.gguf"]["why"]
    assert rows["mmproj-other.gguf"]["pairs_with"] == []
    assert any("mmproj-other.gguf" in n and "pairs with no model" in n for n in fit["notes"])
    assert {r["name"] for r in fit["llm"]} == {"vl.gguf", "text.gguf"}  # projectors are not fitted as LLMs
    text = doctor.render_text({"hardware": {"devices": [], "cpu": {}, "disk": {}}, "software": {}, "fit": fit})
    assert "llm/mmproj-vl.gguf:" in text and "vision projector (type qwen2vl_merger: pairs with vl.gguf" in text
