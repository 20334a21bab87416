"""API-format prompt builders shared by tier-2 tests and benchmarks."""


def txt2img(ckpt="lean_sd15.safetensors", positive="a red cube on a table", negative="blurry",
            seed=1, steps=1, width=64, height=64, batch=1, prefix="lean_test", cfg=7.0,
            sampler="euler", scheduler="normal", denoise=1.0):
    """Stock CheckpointLoaderSimple -> CLIPTextEncode x2 -> KSampler -> VAEDecode -> SaveImage."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": seed, "steps": steps, "cfg": cfg,
                                                   "sampler_name": sampler, "scheduler": scheduler, "denoise": denoise}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def add_lora(g, lora, model, node):
    """A LoRA node `node` in g on `model`: lora = (class_type, inputs); a Lean LoRA node gets a None CLIP
    (TestNoneClip_lean, node "nc"; LoraLoaderModelOnly takes none).  Returns its MODEL ref."""
    ct, inputs = lora
    inputs = dict(inputs, model=model)
    if ct != "LoraLoaderModelOnly":
        g["nc"] = {"class_type": "TestNoneClip_lean", "inputs": {}}
        inputs["clip"] = ["nc", 0]
    g[node] = {"class_type": ct, "inputs": inputs}
    return [node, 0]


def sampler_segments(g, segments, positive, negative, latent, seed, steps, cfg=1.0, sampler="euler",
                     scheduler="simple", prefix="s"):
    """Stock's way of sampling parts of one schedule with different models: KSamplerAdvanced nodes <prefix>0,
    <prefix>1, ... added to g, one per (model ref, start step, end step) of `segments`, each continuing the previous
    one's latent (noise added by the first only, leftover noise returned by all but the last).  Returns the last
    one's latent ref."""
    prev = latent
    for j, (model, a, b) in enumerate(segments):
        g[f"{prefix}{j}"] = {"class_type": "KSamplerAdvanced", "inputs": {
            "model": model, "positive": positive, "negative": negative, "latent_image": prev,
            "add_noise": "enable" if j == 0 else "disable", "noise_seed": seed, "steps": steps, "cfg": cfg,
            "sampler_name": sampler, "scheduler": scheduler, "start_at_step": a, "end_at_step": b,
            "return_with_leftover_noise": "enable" if j < len(segments) - 1 else "disable"}}
        prev = [f"{prefix}{j}", 0]
    return prev


def llm_loader(model="tiny.gguf", backend="llama_cpp", base_url="http://127.0.0.1:8080/v1", model_id="",
               n_ctx=512, n_gpu_layers=0, threads=0):
    return {"class_type": "LeanLLMLoader", "inputs": {"backend": backend, "model": model, "base_url": base_url,
                                                       "model_id": model_id, "n_ctx": n_ctx,
                                                       "n_gpu_layers": n_gpu_layers, "threads": threads}}


def llm_prompt(llm_link, idea="a red fox in the snow", style="SD1.5 tags", system_prompt="", seed=1,
               max_tokens=32, temperature=0.7, top_p=0.9, keep_loaded=True):
    return {"class_type": "LeanLLMPrompt", "inputs": {"llm": llm_link, "idea": idea, "style": style,
                                                       "system_prompt": system_prompt, "seed": seed,
                                                       "max_tokens": max_tokens, "temperature": temperature,
                                                       "top_p": top_p, "keep_loaded": keep_loaded}}


def llm_preview(loader=None, **prompt_kw):
    """LeanLLMLoader -> LeanLLMPrompt -> stock PreviewAny (shows the prompt; ids "l", "p", "v")."""
    return {"l": loader or llm_loader(), "p": llm_prompt(["l", 0], **prompt_kw),
            "v": {"class_type": "PreviewAny", "inputs": {"source": ["p", 0]}}}


def llm_txt2img(loader=None, prefix="lean_llm", **prompt_kw):
    """LeanLLMLoader -> LeanLLMPrompt -> CLIPTextEncode -> KSampler -> VAEDecode -> SaveImage (stock txt2img,
    its positive text linked to the LLM's prompt output; LLM nodes are "l" and "p")."""
    g = txt2img(prefix=prefix)
    g["l"] = loader or llm_loader()
    g["p"] = llm_prompt(["l", 0], **prompt_kw)
    g["2"]["inputs"]["text"] = ["p", 0]
    return g

def prompt_batch_txt2img(text, ckpt="lean_sd15.safetensors", mode="lines", count=16, seed=1, steps=1,
                         width=64, height=64, prefix="lean_pb", negative="", cfg=7.0, batch_seed=0):
    """CheckpointLoaderSimple -> LeanPromptBatch (+ CLIPTextEncode negative) -> EmptyLatentImage whose
    batch_size is LeanPromptBatch's count -> KSampler -> VAEDecode -> SaveImage.  Node "pb" is the
    LeanPromptBatch, "5" the KSampler."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pb": {"class_type": "LeanPromptBatch", "inputs": {"clip": ["1", 1], "text": text, "mode": mode,
                                                          "count": count, "seed": batch_seed, "prefix": "",
                                                          "suffix": ""}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height,
                                                           "batch_size": ["pb", 2]}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["pb", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": seed, "steps": steps, "cfg": cfg,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def add_stock_references(g, prompts, chunks, total, probe_prefix, sampler="5", latents="4", clip=("1", 1)):
    """Add to a prompt_batch_txt2img graph `g` the stock path for entries `chunks` ({batch index: CLIP chunks of
    that prompt}): CLIPTextEncode of prompts[i] alone, padded with stock ConditioningConcat("") to `total`
    chunks, sampled by a copy of KSampler `sampler` on LatentFromBatch(latents, i) (same noise as entry i), its
    latent saved by TestProbe_lean as `<probe_prefix><i>`.  Returns the node id of each padded conditioning."""
    g["empty"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": list(clip)}}
    conds = {}
    for i, k in chunks.items():
        g[f"r{i}c0"] = {"class_type": "CLIPTextEncode", "inputs": {"text": prompts[i], "clip": list(clip)}}
        last = f"r{i}c0"
        for pad in range(total - k):
            g[f"r{i}c{pad + 1}"] = {"class_type": "ConditioningConcat",
                                    "inputs": {"conditioning_to": [last, 0], "conditioning_from": ["empty", 0]}}
            last = f"r{i}c{pad + 1}"
        g[f"r{i}l"] = {"class_type": "LatentFromBatch", "inputs": {"samples": [latents, 0], "batch_index": i,
                                                                   "length": 1}}
        g[f"r{i}k"] = {"class_type": "KSampler", "inputs": {**g[sampler]["inputs"], "positive": [last, 0],
                                                           "latent_image": [f"r{i}l", 0]}}
        g[f"r{i}p"] = {"class_type": "TestProbe_lean", "inputs": {"name": f"{probe_prefix}{i}",
                                                                 "latent": [f"r{i}k", 0]}}
        conds[i] = last
    return conds


def prompt_batch_distributed(text, ckpt="lean_sd15.safetensors", mode="lines", count=16, batch_seed=0, seed=1,
                             steps=1, width=64, height=64, prefix="lean_pbd", negative="", cfg=7.0,
                             participant=True, collector=True, per_image_model=False):
    """Prompt Batch shared out with ComfyUI-Distributed: Distributed Seed (seed 0) -> LeanPromptBatch.participant,
    EmptyLatentImage (batch 1) -> LeanPromptBatch.latent -> KSampler -> VAEDecode -> DistributedCollector ->
    LeanPromptBatchCheck (count) -> SaveImage; stock PreviewAny shows the prompts.  Node ids: "pb" Prompt Batch,
    "ds" Distributed Seed, "col" collector, "chk" check, "save", "pv".  participant=False leaves the input unwired
    (today's whole batch); collector=False leaves the ComfyUI-Distributed nodes out (a host without the pack).
    per_image_model: the checkpoint's MODEL into Prompt Batch's `model` and its `model` output (index 4) into the
    KSampler (the prompts' <lora:...> tags per image)."""
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "pb": {"class_type": "LeanPromptBatch", "inputs": {"clip": ["1", 1], "text": text, "mode": mode,
                                                          "count": count, "seed": batch_seed, "prefix": "",
                                                          "suffix": "", "latent": ["4", 0]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["pb", 0], "negative": ["3", 0],
                                                   "latent_image": ["pb", 3], "seed": seed, "steps": steps,
                                                   "cfg": cfg, "sampler_name": "euler", "scheduler": "normal",
                                                   "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "chk": {"class_type": "LeanPromptBatchCheck", "inputs": {"images": ["6", 0], "count": ["pb", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["chk", 0], "filename_prefix": prefix}},
        "pv": {"class_type": "PreviewAny", "inputs": {"source": ["pb", 1]}},
    }
    if collector:
        g["col"] = {"class_type": "DistributedCollector", "inputs": {"images": ["6", 0], "load_balance": False}}
        g["chk"]["inputs"]["images"] = ["col", 0]
    if per_image_model:
        g["pb"]["inputs"]["model"] = ["1", 0]
        g["5"]["inputs"]["model"] = ["pb", 4]
    if participant:
        g["ds"] = {"class_type": "DistributedSeed", "inputs": {"seed": 0}}
        g["pb"]["inputs"]["participant"] = ["ds", 0]
    return g
