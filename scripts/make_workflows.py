#!/usr/bin/env python3
"""Write the example workflows of example_workflows/ (UI format, version 0.4) from the host's /object_info, and their
API-format copies under tests/workflows_api/ (converted from the UI files, never written by hand).

    python scripts/make_workflows.py [--url http://127.0.0.1:8188 | --object-info info.json] [--only NAME ...]

With no host answering at --url, one is started for the run (COMFYUI_PATH or ~/ComfyUI) and stopped afterwards.
A workflow whose nodes the host does not know (a feature not merged yet) is skipped with a message.

Layout: every workflow reads left to right in columns; each column is a titled group with a MarkdownNote above
it explaining that step.  Model file names are the common public ones, so a user who has them gets a runnable
graph; the tests put fixtures under the same names.
"""
import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from lean import _get, _free_port, answering, start_host, _load_workflow_module  # noqa: E402
from workflow_builder import Graph  # noqa: E402
from workflow_models import (CKPT, CONTROLNET, FLUX_CLIP_L, FLUX_LORA, FLUX_T5, FLUX_UNET, FLUX_VAE, IMAGE,  # noqa: E402
                             LLM, LORA, LORA2, QWEN_LORA, QWEN_TE, QWEN_UNET, QWEN_VAE, SDXL_CKPT, SDXL_LORA, VL_LLM,
                             VL_MMPROJ, ZIMAGE_LORA, ZIMAGE_TE, ZIMAGE_UNET)

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows"
API_DIR = REPO / "tests" / "workflows_api"

NEGATIVE = "blurry, low quality, watermark, text, deformed"

NODE_W = 340
GAP_X = 90          # between columns (room for the group borders and the links)
GAP_Y = 70          # between nodes of a column (room for the next node's title bar)
TOP = 250           # groups start below the row of notes
NOTE_H = 200
COLORS = {"load": "#3f789e", "prompt": "#8A8", "lora": "#a1309b", "control": "#b06634", "sample": "#88A",
          "save": "#4a7a4a", "llm": "#2a7f62"}


# ----------------------------------------------------------------------------- layout

def _height(info, widgets, multiline_h=110):
    """A node's body height as the editor draws it (slots, then one row per widget, taller text boxes)."""
    wf = _load_workflow_module()
    sockets = [n for g in ("required", "optional") for n, s in (info["input"].get(g) or {}).items()
               if not wf._is_widget(s)]
    h = 10 + 22 * max(len(sockets), len(info["output"]))
    for name, spec, extra in wf.widget_inputs(info):
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if spec[0] == "STRING" and opts.get("multiline"):
            h += multiline_h
        elif opts.get("image_upload"):
            h += 24 + 24 + 230   # combo, upload button, image preview
            continue
        else:
            h += 24
        if extra and (opts.get("control_after_generate") or (spec[0] == "INT" and name in wf.SEED_NAMES)):
            h += 24
    return h + 10


class Column:
    def __init__(self, layout, title, note, color, width=NODE_W):
        self.layout, self.title, self.note, self.color, self.width = layout, title, note, color, width
        self.items = []   # (node, height)

    def add(self, ntype, title=None, box_h=None, multiline_h=110, **widgets):
        g = self.layout.g
        node = g.node(ntype, (0, 0), title=title, **widgets)
        h = box_h or _height(g.info[ntype], widgets, multiline_h)
        node.size = [self.width, h]
        self.items.append(node)
        return node


class Layout:
    """Columns left to right; each is a group with a note above it."""

    def __init__(self, object_info):
        self.g = Graph(object_info)
        self.columns = []

    def column(self, title, note, color="load", width=NODE_W):
        c = Column(self, title, note, COLORS.get(color, color), width)
        self.columns.append(c)
        return c

    def finish(self):
        x = 0
        for col in self.columns:
            y = TOP + 80
            for node in col.items:
                node.pos = [x + 20, y]
                y += node.size[1] + GAP_Y
            bottom = y - GAP_Y + 20
            self.g.group(col.title, [x, TOP, col.width + 40, bottom - TOP], color=col.color)
            self.g.note(col.note, (x, 0), size=(col.width + 40, NOTE_H), title=col.title)
            x += col.width + 40 + GAP_X
        # fit the graph in a 1920x1080 screen's canvas, but never below 0.6: the editor hides text under ~0.57
        width = x - GAP_X
        height = max(n.pos[1] + n.size[1] for n in self.g.nodes) + 20
        scale = round(max(0.6, min(1.0, 1820 / width, 940 / (height + 40))), 3)
        data = self.g.to_json()
        data["extra"]["ds"] = {"scale": scale, "offset": [round(20 / scale), round(40 / scale)]}
        return data


def save(data, name):
    data = dict(data)
    data.pop("id", None)
    path = WORKFLOWS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------- shared pieces

def stock_checkpoint(L, note=None):
    c = L.column("1. Load the model", note or (
        "## 1. Load the model\nStock **Load Checkpoint** with an SD1.5 checkpoint, e.g. "
        f"`{CKPT}` in `models/checkpoints`. Any SD1.5 checkpoint works."), "load")
    return c, c.add("CheckpointLoaderSimple", ckpt_name=CKPT)


def sampler_columns(L, model, positive, negative, vae, latent=None, batch_link=None, prefix="lean",
                    width=512, height=512, n="4", extra_note=""):
    """KSampler (+ EmptyLatentImage) column and VAEDecode -> SaveImage column."""
    g = L.g
    s = L.column(f"{n}. Sample", f"## {n}. Sample\n**KSampler** turns noise into the image the conditioning "
                 "describes. 20 steps, cfg 7, euler: the usual SD1.5 starting point." + extra_note, "sample")
    if latent is None:
        latent = s.add("EmptyLatentImage", title="Empty Latent Image", width=width, height=height, batch_size=1)
        if batch_link is not None:
            g.connect(batch_link, latent, "batch_size")
    ks = s.add("KSampler", seed=0, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    g.wire(ks, model=model, positive=positive, negative=negative, latent_image=latent)
    o = L.column(f"{int(n) + 1}. Decode and save", f"## {int(n) + 1}. Decode and save\n**VAE Decode** turns the "
                 f"latents into pixels; **Save Image** writes them to `output/` as `{prefix}_00001_.png`, ...", "save")
    dec = o.add("VAEDecode")
    g.wire(dec, samples=ks, vae=vae)
    save_node = o.add("SaveImage", box_h=300, filename_prefix=prefix)
    g.wire(save_node, images=dec)
    return ks, save_node


# ----------------------------------------------------------------------------- the workflows

def wf_checkpoint(info):
    L = Layout(info)
    g = L.g
    c = L.column("1. Load the checkpoint (mmap)", (
        "## 1. Load the checkpoint, one copy in memory\n**Load Checkpoint (mmap)** maps the file instead of "
        "reading it twice: peak RAM stays near the model's own size. `load_mode` mmap (default) or read (network "
        "drives); `weight_dtype` fp16/bf16/fp8 keeps weights small on 16 GB machines. The load report "
        "appears on the node after a run."), "load")
    ck = c.add("LeanCheckpointLoader", ckpt_name=CKPT, load_mode="mmap", weight_dtype="auto",
               load_clip=True, load_vae=True)
    p = L.column("2. Prompt", "## 2. Prompt\nTwo **CLIP Text Encode** nodes: what you want, and what you don't.",
                 "prompt")
    pos = p.add("CLIPTextEncode", title="Positive prompt",
                text="a lighthouse on a rocky coast at sunset, dramatic sky, highly detailed")
    neg = p.add("CLIPTextEncode", title="Negative prompt", text=NEGATIVE)
    g.wire(pos, clip=ck.out("CLIP"))
    g.wire(neg, clip=ck.out("CLIP"))
    sampler_columns(L, ck.out("MODEL"), pos, neg, ck.out("VAE"), prefix="lean_checkpoint", n="3")
    return L.finish()


def wf_lora(info):
    L = Layout(info)
    g = L.g
    _, ck = stock_checkpoint(L)
    c = L.column("2. LoRA from prompt tags", (
        "## 2. LoRA from the prompt's tags\n**LoRA from Prompt Tags** finds `<lora:name:weight>` in the text, "
        f"loads each LoRA from `models/loras` (here `{LORA}`) and removes the tags. `sched=0:0.2,0.5:1,1:0.4` "
        "ramps the strength over the steps (step fraction : strength) without re-patching the model. Type "
        "`<lora:` in the box for a list of your LoRAs."), "lora")
    tags = c.add("LeanLoraTags", multiline_h=140, text=(
        "a cozy wooden cabin in a snowy forest, warm light in the windows, "
        "<lora:add_detail:0.8:sched=0:0.2,0.5:1,1:0.4>"))
    g.wire(tags, model=ck.out("MODEL"), clip=ck.out("CLIP"))
    p = L.column("3. Encode the prompt", (
        "## 3. Encode the prompt\nThe positive encoder takes the text **without** the tags (linked from the LoRA "
        "node) and the CLIP **with** the LoRA."), "prompt")
    pos = p.add("CLIPTextEncode", title="Positive prompt (from the tags node)", text="")
    neg = p.add("CLIPTextEncode", title="Negative prompt", text=NEGATIVE)
    g.wire(pos, clip=tags.out("clip"), text=tags.out("text"))
    g.wire(neg, clip=tags.out("clip"))
    sampler_columns(L, tags.out("model"), pos, neg, ck.out("VAE"), prefix="lean_lora", n="4")
    return L.finish()


def wf_sdxl_lora(info):
    L = Layout(info)
    g = L.g
    c = L.column("1. Load SDXL (mmap)", (
        "## 1. Load SDXL, one copy in memory\n**Load Checkpoint (mmap)** with an SDXL checkpoint, e.g. "
        f"`{SDXL_CKPT}` in `models/checkpoints` (SDXL, Pony, Illustrious: any SDXL-based file). "
        "On a 16 GB machine pick `weight_dtype` fp16: the UNet stays at about 5 GB instead of 10."), "load")
    ck = c.add("LeanCheckpointLoader", ckpt_name=SDXL_CKPT, load_mode="mmap", weight_dtype="auto",
               load_clip=True, load_vae=True)
    t = L.column("2. LoRA from prompt tags", (
        "## 2. SDXL LoRA from the prompt's tags\n**LoRA from Prompt Tags** loads each `<lora:name:unet:te>` from "
        f"`models/loras` (here `{SDXL_LORA}`: kohya or diffusers/PEFT) into both SDXL text encoders and the UNet, "
        "and removes the tags. `lbw=MIDD` weights SDXL's blocks (BASE, IN04..IN08, M00, OUT00..OUT05: 12 values "
        "or a preset)."), "lora")
    tags = t.add("LeanLoraTags", multiline_h=140, text=(
        "a lighthouse on a rocky coast at sunset, dramatic sky, highly detailed, "
        f"<lora:{SDXL_LORA.rsplit('.', 1)[0]}:0.8:0.6:lbw=MIDD>"))
    g.wire(tags, model=ck.out("MODEL"), clip=ck.out("CLIP"))
    p = L.column("3. Encode the prompt", (
        "## 3. Encode the prompt\nThe positive encoder takes the text **without** the tags (linked from the LoRA "
        "node) and the CLIP **with** the LoRA; SDXL's size conditioning is the stock default (the image size)."),
        "prompt")
    pos = p.add("CLIPTextEncode", title="Positive prompt (from the tags node)", text="")
    neg = p.add("CLIPTextEncode", title="Negative prompt", text=NEGATIVE)
    g.wire(pos, clip=tags.out("clip"), text=tags.out("text"))
    g.wire(neg, clip=tags.out("clip"))
    sampler_columns(L, tags.out("model"), pos, neg, ck.out("VAE"), prefix="lean_sdxl_lora", n="4",
                    width=1024, height=1024, extra_note=" SDXL is trained at 1024x1024.")
    return L.finish()


def canny_columns(L, n_first, image_title=None):
    g = L.g
    c = L.column(f"{n_first}. Edges from a photo", (
        f"## {n_first}. Edges from a photo\n**Load Image** (`{IMAGE}` in `input/`, or upload one), then "
        "**Canny Edges (OpenCV)**: 0-255 thresholds, or `auto` median/otsu per image. The preview shows the edge "
        "map the ControlNet follows."), "control")
    img = c.add("LoadImage", title=image_title, image=IMAGE)
    canny = c.add("LeanCanny", low_threshold=100, high_threshold=200, auto="off", sigma=0.33, blur=0,
                  aperture="3", l2_gradient=False, resolution=512, invert=False)
    g.wire(canny, image=img.out("IMAGE"))
    prev = c.add("PreviewImage", title="Edge map", box_h=260)
    g.wire(prev, images=canny.out("image"))
    return canny


def controlnet_column(L, n, canny, positive, negative, vae):
    g = L.g
    c = L.column(f"{n}. Apply the ControlNet", (
        f"## {n}. Apply the ControlNet\n**Load ControlNet Model** (`{CONTROLNET}` in `models/controlnet`) and "
        "**Apply ControlNet** steer both prompts with the edge map: the image keeps the photo's outlines."),
        "control")
    cn = c.add("ControlNetLoader", control_net_name=CONTROLNET)
    apply = c.add("ControlNetApplyAdvanced", strength=1.0, start_percent=0.0, end_percent=1.0)
    g.wire(apply, positive=positive, negative=negative, control_net=cn, image=canny.out("image"), vae=vae)
    return apply


def wf_canny(info):
    L = Layout(info)
    g = L.g
    canny = canny_columns(L, 1)
    c, ck = stock_checkpoint(L, "## 2. Model and prompt\nStock **Load Checkpoint** (SD1.5, e.g. "
                             f"`{CKPT}`) and the two prompts.")
    c.title = "2. Model and prompt"
    pos = c.add("CLIPTextEncode", title="Positive prompt", text="a watercolor painting of the same scene, soft colors")
    neg = c.add("CLIPTextEncode", title="Negative prompt", text=NEGATIVE)
    g.wire(pos, clip=ck.out("CLIP"))
    g.wire(neg, clip=ck.out("CLIP"))
    apply = controlnet_column(L, 3, canny, pos, neg, ck.out("VAE"))
    sampler_columns(L, ck.out("MODEL"), apply.out(0), apply.out(1), ck.out("VAE"), prefix="lean_canny", n="4")
    return L.finish()


BATCH_PROMPTS = "\n".join([
    "# one prompt per line: 16 lines, 16 images, one sampler run",
    "a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen, steam, close-up",
    "an astronaut riding a horse on the moon", "a cottage garden full of roses", "a neon street at night, rain",
    "a sailing ship in a storm", "a cup of coffee on a wooden table", "a dragon made of autumn leaves",
    "a mountain lake at sunrise, mist", "a robot reading a book in a library", "a field of sunflowers, blue sky",
    "an owl on a branch under the full moon", "a tiny house on a cliff by the sea", "a steam train crossing a bridge",
    "a koi pond with lotus flowers, top view"])


def wf_prompt_batch(info):
    L = Layout(info)
    g = L.g
    _, ck = stock_checkpoint(L)
    c = L.column("2. 16 prompts, one batch", (
        "## 2. Sixteen prompts, one batch\n**Prompt Batch (wildcards)**: one prompt per line (or `{a|b}` choices, "
        "`__name__` wildcard files from `models/wildcards`, modes random/combinatorial). The node shows how many "
        "prompts the text makes. Its `count` output sets the latent batch size: **one** KSampler run makes all 16 "
        "images, image *i* from prompt *i*."), "prompt", width=380)
    pb = c.add("LeanPromptBatch", multiline_h=330, text=BATCH_PROMPTS, mode="lines", count=16, seed=0,
               prefix="", suffix="highly detailed, soft light")
    g.wire(pb, clip=ck.out("CLIP"))
    neg = c.add("CLIPTextEncode", title="Negative prompt (shared)", text=NEGATIVE)
    g.wire(neg, clip=ck.out("CLIP"))
    sampler_columns(L, ck.out("MODEL"), pb.out("conditioning"), neg, ck.out("VAE"), prefix="lean_batch",
                    batch_link=pb.out("count"), n="3",
                    extra_note=" `batch_size` is linked to the prompt count.")
    return L.finish()


DISTRIBUTED_PROMPTS = "\n".join([
    "# 12 prompts: with a master and 2 workers each GPU makes 4 of them",
    "a {red|white|arctic} fox in the snow, morning light",
    "a lighthouse on a rocky coast at dusk, long exposure",
    "a bowl of ramen on a wooden table, steam, close-up",
    "a {watercolor|pencil} drawing of a cottage garden",
    "a {red|green|cream} vintage car on a desert road",
    "an astronaut reading in a library, warm light",
    "a glass teapot with blooming tea, studio light",
    "a mountain village under the northern lights",
    "a {red|blue} paper boat on a puddle, rain",
    "a cat asleep on a stack of books",
    "a city street at night, neon reflections, rain",
    "a bonsai tree on a windowsill, soft light"])


def wf_prompt_batch_distributed(info):
    L = Layout(info)
    g = L.g
    _, ck = stock_checkpoint(L, "## 1. Load the model\nStock **Load Checkpoint** with an SD1.5 checkpoint, e.g. "
                             f"`{CKPT}`. The **same file** must be in `models/checkpoints` of every worker (and the "
                             "same wildcard files in `models/wildcards`): `python scripts/lean.py doctor "
                             "this_workflow.json --distributed` checks them.")
    c = L.column("2. Share the prompts out", (
        "## 2. Share the prompts out\n**Distributed Seed** (ComfyUI-Distributed) with seed **0**, control "
        "**fixed**: 0 on the master, 1, 2, ... on the workers. Wired into Prompt Batch's `participant`, each "
        "participant keeps only its share of the 12 prompts (master 1-4, worker 1 5-8, worker 2 9-12) and "
        "encodes only those. **Empty Latent Image** (batch 1) goes through Prompt Batch: its `latent` output "
        "holds this participant's entries with their global batch index, so every image gets the noise it would "
        "get on one machine."), "prompt", width=380)
    ds = c.add("DistributedSeed", seed=0)
    pb = c.add("LeanPromptBatch", multiline_h=330, text=DISTRIBUTED_PROMPTS, mode="lines", count=16, seed=0,
               prefix="", suffix="highly detailed")
    lat = c.add("EmptyLatentImage", title="Empty Latent Image (batch 1)", width=512, height=512, batch_size=1)
    g.wire(pb, clip=ck.out("CLIP"), participant=ds.out(0), latent=lat)
    neg = c.add("CLIPTextEncode", title="Negative prompt (shared)", text=NEGATIVE)
    g.wire(neg, clip=ck.out("CLIP"))
    s = L.column("3. Sample", "## 3. Sample\n**KSampler** on this participant's latents: one run per participant, "
                 "all participants at once. Its seed is the same everywhere (the batch index makes each image's "
                 "noise).", "sample")
    ks = s.add("KSampler", seed=0, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    g.wire(ks, model=ck.out("MODEL"), positive=pb.out("conditioning"), negative=neg, latent_image=pb.out("latent"))
    o = L.column("4. Gather, check, save", (
        "## 4. Gather, check, save\n**VAE Decode**, then **Distributed Collector** gathers every participant's "
        "images on the master (master first, then the workers in order: prompt order). **Prompt Batch Check** "
        "stops the run with an error naming the worker when an image is missing (a worker that failed, stopped "
        "or timed out), so image *i* is always prompt *i*. Queue with ComfyUI-Distributed's **Queue** button "
        "(workers enabled in its panel); **Save Image** writes `lean_distributed_00001_.png`, ..."), "save")
    dec = o.add("VAEDecode")
    g.wire(dec, samples=ks, vae=ck.out("VAE"))
    col = o.add("DistributedCollector")
    g.wire(col, images=dec)
    chk = o.add("LeanPromptBatchCheck")
    g.wire(chk, images=col.out(0), count=pb.out("count"))
    save_node = o.add("SaveImage", box_h=300, filename_prefix="lean_distributed")
    g.wire(save_node, images=chk)
    return L.finish()


FLUX_PROMPTS = "\n".join([
    "# one prompt per line: 4 lines, 4 images, one sampler run",
    "a red fox in the snow, morning light, photograph",
    "a lighthouse on a rocky coast at dusk, long exposure",
    "a bowl of ramen on a wooden table, steam, close-up",
    "a watercolor painting of a cottage garden full of roses"])


def flux_loaders(L):
    """The Flux loading column: (diffusion model, DualCLIPLoader, VAELoader)."""
    c = L.column("1. Load Flux", (
        "## 1. Load Flux: model, text encoders, VAE\n**Load Diffusion Model (mmap)** reads a Flux file from "
        f"`models/diffusion_models` (here `{FLUX_UNET}`; fp8 files work, `weight_dtype` as stock) with one copy in "
        f"RAM. **DualCLIPLoader** (type flux) loads T5-XXL (`{FLUX_T5}`) and CLIP-L (`{FLUX_CLIP_L}`) from "
        f"`models/text_encoders`; **Load VAE** the Flux VAE `{FLUX_VAE}`."), "load")
    unet = c.add("LeanDiffusionModelLoader", unet_name=FLUX_UNET, weight_dtype="default", load_mode="mmap")
    te = c.add("DualCLIPLoader", title="Load CLIP (Dual)", clip_name1=FLUX_T5, clip_name2=FLUX_CLIP_L, type="flux")
    vae = c.add("VAELoader", vae_name=FLUX_VAE)
    return unet, te, vae


def decode_and_save(L, n, ks, vae, prefix, vae_words="the Flux VAE"):
    o = L.column(f"{n}. Decode and save", f"## {n}. Decode and save\n**VAE Decode** with {vae_words}; **Save Image** "
                 f"writes `output/{prefix}_00001_.png`, ... (image *i* from prompt *i*).", "save")
    dec = o.add("VAEDecode")
    L.g.wire(dec, samples=ks, vae=vae)
    save_node = o.add("SaveImage", box_h=300, filename_prefix=prefix)
    L.g.wire(save_node, images=dec)


def dit_lora_and_prompts(L, unet, te, lora_name, lora_note, prompt_note, prompts, width, multiline_h,
                         negative_text=None, model_through=False, **pb_extra):
    """Columns 2 and 3 of the diffusion-model workflows (Flux, Z-Image, Qwen-Image): LoRA (dynamic) on the model and
    its text encoder, then Prompt Batch on the LoRA's CLIP with a zeroed negative (models run at cfg 1), or with
    negative_text encoded by the same CLIP (models run at cfg > 1).  model_through: the LoRA's model also goes
    into Prompt Batch (whose `model` output then runs each line with its own tokens).  Returns (lora, prompt batch,
    negative)."""
    g = L.g
    lora = L.column("2. LoRA", lora_note, "lora").add(
        "LeanLoraLoader", lora_name=lora_name, strength_model=0.8, strength_clip=0.0, schedule="", block_weights="")
    g.wire(lora, model=unet.out("MODEL"), clip=te.out("CLIP"))
    p = L.column("3. 4 prompts, one batch", prompt_note, "prompt", width=width)
    pb = p.add("LeanPromptBatch", multiline_h=multiline_h, text=prompts, mode="lines", count=4, seed=0, prefix="",
               suffix="", **pb_extra)
    g.wire(pb, clip=lora.out("clip"), **({"model": lora.out("model")} if model_through else {}))
    if negative_text is None:
        neg = p.add("ConditioningZeroOut", title="Negative (unused at cfg 1)")
        g.wire(neg, conditioning=pb.out("conditioning"))
    else:
        neg = p.add("CLIPTextEncode", title="Negative prompt", text=negative_text)
        g.wire(neg, clip=lora.out("clip"))
    return lora, pb, neg


def wf_flux(info):
    L = Layout(info)
    g = L.g
    unet, te, vae = flux_loaders(L)
    lora, pb, neg = dit_lora_and_prompts(L, unet, te, FLUX_LORA, (
        "## 2. A Flux LoRA\n**LoRA (dynamic)** adds a Flux LoRA from `models/loras` (kohya/BFL or diffusers names, "
        f"here `{FLUX_LORA}`) as a branch in the forward pass: changing the strength re-patches nothing. Most Flux "
        "LoRAs train the diffusion model only (strength_clip has no effect then)."), (
        "## 3. Four prompts, one batch\n**Prompt Batch (wildcards)** encodes every line with T5-XXL and CLIP-L "
        "(entry *i* equals CLIPTextEncodeFlux of line *i*) and carries Flux's guidance (advanced input `guidance`, "
        "3.5). Its `count` sets the latent batch size. Flux-dev runs at cfg 1, so the negative is only a zeroed "
        "placeholder."), FLUX_PROMPTS, width=380, multiline_h=200, guidance=3.5)
    s = L.column("4. Sample", (
        "## 4. Sample\n**KSampler** at cfg 1.0, euler, simple, 20 steps: how Flux-dev is run (guidance comes from "
        "the conditioning). **EmptySD3LatentImage** makes Flux's 16-channel latents, `batch_size` linked to the "
        "prompt count: one run makes all 4 images."), "sample")
    latent = s.add("EmptySD3LatentImage", width=1024, height=1024, batch_size=1)
    g.connect(pb.out("count"), latent, "batch_size")
    ks = s.add("KSampler", seed=0, steps=20, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.wire(ks, model=lora.out("model"), positive=pb.out("conditioning"), negative=neg, latent_image=latent)
    decode_and_save(L, "5", ks, vae, "lean_flux")
    return L.finish()


def _stem(name):
    return name.rsplit(".", 1)[0]


PER_IMAGE_PROMPTS = "\n".join([
    "# one prompt per line, each with its own LoRAs: 4 images, one sampler run",
    "a castle on a hill at dawn, oil painting",
    f"a castle on a hill at dawn, oil painting <lora:{_stem(LORA)}:1.0>",
    f"a castle on a hill at dawn, oil painting <lora:{_stem(LORA)}:-1.0>",
    f"a castle on a hill at dawn, oil painting <lora:{_stem(LORA)}:0.5> "
    f"<lora:{_stem(LORA2)}:0.8:sched=0:0,0.5:1,1:1>"])


def wf_lora_per_image(info):
    L = Layout(info)
    g = L.g
    _, ck = stock_checkpoint(L)
    c = L.column("2. A LoRA set per prompt", (
        "## 2. A different LoRA for every image\n**Prompt Batch** reads `<lora:name:weight>` tags per line (the "
        "tag syntax of LoRA from Prompt Tags: `unet:te` strengths, `sched=`, `lbw=`, also from wildcards) and "
        f"removes them before encoding. Connect its `model` input: its `model` output gives image *i* the LoRAs of "
        f"line *i* only (here `{LORA}` at +1, -1, and with `{LORA2}` on a schedule), all in **one** sampler pass. "
        "The node lists which LoRAs each image got."), "prompt", width=420)
    pb = c.add("LeanPromptBatch", multiline_h=260, text=PER_IMAGE_PROMPTS, mode="lines", count=4, seed=0,
               prefix="", suffix="")
    g.wire(pb, clip=ck.out("CLIP"), model=ck.out("MODEL"))
    neg = c.add("CLIPTextEncode", title="Negative prompt (shared)", text=NEGATIVE)
    g.wire(neg, clip=ck.out("CLIP"))
    sampler_columns(L, pb.out("model"), pb.out("conditioning"), neg, ck.out("VAE"), prefix="lean_lora_per_image",
                    batch_link=pb.out("count"), n="3",
                    extra_note=" The model comes from Prompt Batch (each image's LoRAs); `batch_size` is linked to "
                               "the prompt count.")
    return L.finish()


FLUX_PER_IMAGE_PROMPTS = "\n".join([
    "# one prompt per line, each with its own LoRA strength: 4 images, one sampler run",
    "a red fox in the snow, morning light, photograph",
    f"a red fox in the snow, morning light, photograph <lora:{_stem(FLUX_LORA)}:0.8>",
    f"a red fox in the snow, morning light, photograph <lora:{_stem(FLUX_LORA)}:1.0:lbw=DOUBLE>",
    f"a red fox in the snow, morning light, photograph <lora:{_stem(FLUX_LORA)}:1.0:sched=0:0,0.3:1,1:1>"])


def wf_flux_per_image(info):
    L = Layout(info)
    g = L.g
    unet, te, vae = flux_loaders(L)
    p = L.column("2. A LoRA per prompt", (
        "## 2. A different LoRA for every image\n**Prompt Batch** reads `<lora:name:weight>` tags per line (here "
        f"`{FLUX_LORA}`: none, 0.8, only the double blocks with `lbw=DOUBLE`, and from 30% of the steps with "
        "`sched=`) and removes them before encoding with T5-XXL and CLIP-L. Its `model` output gives image *i* the "
        "LoRA of line *i* only, in one sampler pass. Flux-dev runs at cfg 1: the negative is a zeroed placeholder."),
        "prompt", width=420)
    pb = p.add("LeanPromptBatch", multiline_h=240, text=FLUX_PER_IMAGE_PROMPTS, mode="lines", count=4, seed=0,
               prefix="", suffix="", guidance=3.5)
    g.wire(pb, clip=te.out("CLIP"), model=unet.out("MODEL"))
    neg = p.add("ConditioningZeroOut", title="Negative (unused at cfg 1)")
    g.wire(neg, conditioning=pb.out("conditioning"))
    s = L.column("3. Sample", (
        "## 3. Sample\n**KSampler** at cfg 1.0, euler, simple, 20 steps, with the model from Prompt Batch. "
        "**EmptySD3LatentImage** makes Flux's latents, `batch_size` linked to the prompt count."), "sample")
    latent = s.add("EmptySD3LatentImage", width=1024, height=1024, batch_size=1)
    g.connect(pb.out("count"), latent, "batch_size")
    ks = s.add("KSampler", seed=0, steps=20, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.wire(ks, model=pb.out("model"), positive=pb.out("conditioning"), negative=neg, latent_image=latent)
    decode_and_save(L, "4", ks, vae, "lean_flux_per_image")
    return L.finish()


def llm_columns(L, n, idea, style="SD1.5 tags"):
    g = L.g
    c = L.column(f"{n}. A local LLM writes the prompt", (
        f"## {n}. A local LLM writes the prompt\n**LLM Loader** runs a quantized `.gguf` from `models/llm` (e.g. "
        f"`{LLM}`) with llama.cpp, offline, or talks to an OpenAI-compatible server. **LLM Prompt Writer** turns "
        "a short idea into a full prompt; the text streams onto the node, the model's thinking is kept out of "
        "the prompt."), "llm")
    loader = c.add("LeanLLMLoader", backend="llama_cpp", model=LLM, n_ctx=2048, n_gpu_layers=0, threads=0)
    writer = c.add("LeanLLMPrompt", multiline_h=80, idea=idea, style=style, seed=0, max_tokens=160,
                   temperature=0.7, top_p=0.9, keep_loaded=True)
    g.wire(writer, llm=loader)
    return writer


def wf_llm(info):
    L = Layout(info)
    g = L.g
    writer = llm_columns(L, 1, "a cat astronaut floating above the Earth")
    c, ck = stock_checkpoint(L, "## 2. Model and prompt\nStock **Load Checkpoint** (SD1.5). The positive "
                             "prompt's text is linked to the LLM's `prompt` output.")
    c.title = "2. Model and prompt"
    pos = c.add("CLIPTextEncode", title="Positive prompt (from the LLM)", text="")
    neg = c.add("CLIPTextEncode", title="Negative prompt", text=NEGATIVE)
    g.wire(pos, clip=ck.out("CLIP"), text=writer.out("prompt"))
    g.wire(neg, clip=ck.out("CLIP"))
    sampler_columns(L, ck.out("MODEL"), pos, neg, ck.out("VAE"), prefix="lean_llm", n="3")
    return L.finish()


def wf_all(info):
    L = Layout(info)
    g = L.g
    writer = llm_columns(L, 1, "a quiet harbor town")
    c = L.column("2. Model (mmap) and LoRA", (
        "## 2. Model (mmap) and LoRA\n**Load Checkpoint (mmap)** keeps one copy of the weights in RAM. "
        f"**LoRA (dynamic)** adds `{LORA}` as a branch in the forward pass, with a per-step `schedule` "
        "(0:0.2,0.5:1,1:0.4): no re-patching when you change it."), "lora")
    ck = c.add("LeanCheckpointLoader", ckpt_name=CKPT, load_mode="mmap", weight_dtype="auto",
               load_clip=True, load_vae=True)
    lora = c.add("LeanLoraLoader", lora_name=LORA, strength_model=0.8, strength_clip=0.8,
                 schedule="0:0.2,0.5:1,1:0.4", block_weights="")
    g.wire(lora, model=ck.out("MODEL"), clip=ck.out("CLIP"))
    p = L.column("3. Prompt batch with wildcards", (
        "## 3. Prompt batch with wildcards\n**Prompt Batch (wildcards)** takes the LLM's prompt and, in `random` "
        "mode, makes 4 variants with the `{a|b}` choices of the suffix. The negative prompt is shared."),
        "prompt", width=380)
    pb = p.add("LeanPromptBatch", multiline_h=90, text="", mode="random", count=4, seed=0, prefix="",
               suffix="{golden hour|blue hour|overcast light}, {35mm photo|watercolor|oil painting}")
    g.wire(pb, clip=lora.out("clip"), text=writer.out("prompt"))
    neg = p.add("CLIPTextEncode", title="Negative prompt", text=NEGATIVE)
    g.wire(neg, clip=lora.out("clip"))
    canny = canny_columns(L, 4)
    apply = controlnet_column(L, 5, canny, pb.out("conditioning"), neg, ck.out("VAE"))
    sampler_columns(L, lora.out("model"), apply.out(0), apply.out(1), ck.out("VAE"), prefix="lean_all",
                    batch_link=pb.out("count"), n="6", extra_note=" One run makes the 4 images.")
    return L.finish()


def wf_image_to_prompt(info):
    L = Layout(info)
    g = L.g
    c = L.column("1. The picture", (
        f"## 1. The picture\n**Load Image** (`{IMAGE}` in `input/`, or upload one): a photo or a generated image "
        "to reproduce or vary. A batch of N images (e.g. a folder loaded as a batch) gives N prompts in one run."),
        "load")
    img = c.add("LoadImage", image=IMAGE)
    v = L.column("2. A local vision model describes it", (
        f"## 2. A local vision model describes it\n**Local LLM Loader** runs a vision `.gguf` (here `{VL_LLM}`) "
        f"with its projector (advanced input `mmproj`: `{VL_MMPROJ}`, both in `models/llm`), offline. **LLM Prompt "
        "Writer** looks at the picture: `idea` empty describes it as it is; type a change (\"make it winter\") "
        "to steer. Style `describe for SD1.5` writes SD1.5 tags; SDXL / Flux / Z-Image, caption and tags too."),
        "llm", width=380)
    loader = v.add("LeanLLMLoader", backend="llama_cpp", model=VL_LLM, n_ctx=4096, n_gpu_layers=0, threads=0,
                   mmproj=VL_MMPROJ)
    writer = v.add("LeanLLMPrompt", multiline_h=80, idea="", style="describe for SD1.5", seed=0, max_tokens=200,
                   temperature=0.7, top_p=0.9, keep_loaded=False)
    g.wire(writer, llm=loader, image=img.out("IMAGE"))
    c, ck = stock_checkpoint(L, "## 3. Model and prompts\nStock **Load Checkpoint** (SD1.5). **Prompt Batch** "
                             "reads the writer's `prompt`, one line per picture (`keep_loaded` is off: the vision "
                             "model leaves memory before the image model samples).")
    c.title = "3. Model and prompts"
    pb = c.add("LeanPromptBatch", multiline_h=60, text="", mode="lines", count=16, seed=0, prefix="", suffix="")
    g.wire(pb, clip=ck.out("CLIP"), text=writer.out("prompt"))
    neg = c.add("CLIPTextEncode", title="Negative prompt", text=NEGATIVE)
    g.wire(neg, clip=ck.out("CLIP"))
    sampler_columns(L, ck.out("MODEL"), pb.out("conditioning"), neg, ck.out("VAE"), prefix="lean_img2prompt",
                    batch_link=pb.out("count"), n="4", extra_note=" `batch_size` is the number of prompts.")
    return L.finish()


ZIMAGE_PROMPTS = "\n".join([
    "# Z-Image Turbo: one image per line, one sampler run. Lines of any length: the model comes through Prompt Batch,",
    "# which runs each line with its own tokens (Z-Image reads text padding), so each image equals its line alone",
    "A red lighthouse on a rocky cliff at dusk",
    "A white lighthouse on a rocky cliff at dusk, waves breaking below, warm light in the lantern room, film photograph",
    "Macro photograph of a blue glass lighthouse figurine on a rainy windowsill, shallow depth of field, soft morning "
    "light, the harbour blurred behind it, a cup of tea beside it",
    "A lighthouse keeper's cabin in deep snow, green door, smoke from the chimney"])


def dit_workflow(info, title, load_note, models, lora, prompt_note, prompts, sample_note, sampling, prefix,
                 negative_text=None, vae_words="the Flux VAE", model_through=False):
    """The Lean diffusion-model workflows of the 2026 families (Z-Image, Qwen-Image): Load Diffusion Model (mmap) +
    Load Text Encoder (mmap) + Load VAE, LoRA (dynamic), Prompt Batch, ModelSamplingAuraFlow -> KSampler, decode and
    save.  models: (unet, text encoder, its CLIPLoader type, vae); lora: (file, note); sampling: (shift, size, steps,
    cfg, sampler)."""
    L = Layout(info)
    g = L.g
    unet_name, te_name, te_type, vae_name = models
    shift, size, steps, cfg, sampler = sampling
    c = L.column(title, load_note, "load")
    unet = c.add("LeanDiffusionModelLoader", unet_name=unet_name, weight_dtype="default", load_mode="mmap")
    te = c.add("LeanTextEncoderLoader", clip_name=te_name, type=te_type, device="default", load_mode="mmap",
               weight_dtype="default")
    vae = c.add("VAELoader", vae_name=vae_name)
    lora, pb, neg = dit_lora_and_prompts(L, unet, te, *lora, prompt_note, prompts, width=420, multiline_h=220,
                                         negative_text=negative_text, model_through=model_through)
    s = L.column("4. Sample", sample_note, "sample")
    ms = s.add("ModelSamplingAuraFlow", shift=shift)
    g.wire(ms, model=pb.out("model") if model_through else lora.out("model"))
    latent = s.add("EmptySD3LatentImage", width=size, height=size, batch_size=1)
    g.connect(pb.out("count"), latent, "batch_size")
    ks = s.add("KSampler", seed=0, steps=steps, cfg=cfg, sampler_name=sampler, scheduler="simple", denoise=1.0)
    g.wire(ks, model=ms, positive=pb.out("conditioning"), negative=neg, latent_image=latent)
    decode_and_save(L, "5", ks, vae, prefix, vae_words)
    return L.finish()


def wf_zimage(info):
    return dit_workflow(info, "1. Load Z-Image", (
        "## 1. Load Z-Image Turbo\n**Load Diffusion Model (mmap)** reads the Z-Image diffusion model from "
        f"`models/diffusion_models` (here `{ZIMAGE_UNET}`) with one copy in RAM. **Load Text Encoder (mmap)** reads "
        f"its Qwen3-4B text encoder (`{ZIMAGE_TE}`, type lumina2) from `models/text_encoders`, also one copy: an 8 GB "
        f"file on a 16 GB machine. **Load VAE**: the Flux VAE `{FLUX_VAE}`."),
        (ZIMAGE_UNET, ZIMAGE_TE, "lumina2", FLUX_VAE), (ZIMAGE_LORA, (
            "## 2. A Z-Image LoRA\n**LoRA (dynamic)** adds a Z-Image LoRA from `models/loras` (ai-toolkit or diffusers "
            f"names, here `{ZIMAGE_LORA}`) as a branch in the forward pass. Block weights by name: `L0-L29` (layers), "
            "`NR0-NR1`, `CR0-CR1` (the refiners), presets LAYERS and REFINERS.")), (
        "## 3. Four prompts, one batch\n**Prompt Batch (wildcards)** encodes every line with Qwen3-4B into one "
        "batched conditioning; `count` sets the latent batch size. Z-Image's model reads text padding as content, "
        "so the model goes through Prompt Batch too: its `model` output runs each line with its own tokens, and "
        "each image equals its line alone whatever the lines' lengths. Turbo runs at cfg 1: the negative is a "
        "zeroed placeholder."), ZIMAGE_PROMPTS, (
        "## 4. Sample\n**ModelSamplingAuraFlow** (shift 3) and **KSampler** at 8 steps, cfg 1.0, res_multistep, "
        "simple: how Z-Image Turbo is run. **EmptySD3LatentImage** makes its 16-channel latents, `batch_size` "
        "linked to the prompt count."), (3.0, 1024, 8, 1.0, "res_multistep"), "lean_zimage", model_through=True)


QWEN_PROMPTS = "\n".join([
    "# Qwen-Image: one image per line, one sampler run. Lines of any length: each image equals its line alone",
    "# (the padding of shorter lines is masked). Text to render goes in quotes",
    'A bookshop window at dusk with a hand-painted wooden sign that reads "Lean Nodes", warm light inside',
    'A neon sign on a wet brick wall that says "OPEN 24 HOURS", rainy night, reflections on the pavement',
    'A coffee cup seen from above, the words "Good Morning" drawn in the latte foam',
    'A chalkboard menu outside a small cafe: "Soup of the day: Tomato", neat white chalk letters, morning sun '
    "on the pavement, a bicycle leaning on the wall"])


def wf_qwen_image(info):
    return dit_workflow(info, "1. Load Qwen-Image", (
        "## 1. Load Qwen-Image\n**Load Diffusion Model (mmap)** reads the 20B Qwen-Image diffusion model from "
        f"`models/diffusion_models` (here the fp8 file `{QWEN_UNET}`, 20 GB) with one copy in RAM. **Load Text "
        f"Encoder (mmap)** reads Qwen2.5-VL-7B (`{QWEN_TE}`, type qwen_image) from `models/text_encoders`, also one "
        f"copy. **Load VAE**: `{QWEN_VAE}` (the Wan 2.1 VAE)."),
        (QWEN_UNET, QWEN_TE, "qwen_image", QWEN_VAE), (QWEN_LORA, (
            "## 2. A Qwen-Image LoRA\n**LoRA (dynamic)** adds a Qwen-Image LoRA from `models/loras` (diffusers/PEFT "
            f"as ai-toolkit writes it, DiffSynth, musubi-tuner; here `{QWEN_LORA}`) as a branch in the forward pass. "
            "Block weights by name: `B0-B59` (the 60 transformer blocks).")), (
        "## 3. Four prompts, one batch\n**Prompt Batch (wildcards)** encodes every line with Qwen2.5-VL-7B into "
        "one batched conditioning with its attention mask; `count` sets the latent batch size. Qwen-Image masks the "
        "padding of shorter lines, so each image equals its line alone (to float rounding) whatever the lengths "
        "(ComfyUI 0.3.64's Qwen-Image ignores that mask: there, use lines of one length)."), QWEN_PROMPTS, (
        "## 4. Sample\n**ModelSamplingAuraFlow** (shift 3.1) and **KSampler** at 20 steps, cfg 2.5, euler, simple: "
        "how Qwen-Image is run. **EmptySD3LatentImage** makes its 16-channel latents at 1328x1328, `batch_size` "
        "linked to the prompt count."), (3.1, 1328, 20, 2.5, "euler"), "lean_qwen_image", negative_text=" ",
        vae_words="the Qwen-Image VAE")


WORKFLOWS_DEF = {
    "lean_checkpoint_mmap": wf_checkpoint,
    "lean_lora_tags_schedule": wf_lora,
    "lean_canny_controlnet": wf_canny,
    "lean_prompt_batch_16": wf_prompt_batch,
    "lean_llm_prompt": wf_llm,
    "lean_all_in_one": wf_all,
    "lean_sdxl_lora_tags": wf_sdxl_lora,
    "lean_flux_lora_prompt_batch": wf_flux,
    "lean_image_to_prompt": wf_image_to_prompt,
    "lean_prompt_batch_distributed": wf_prompt_batch_distributed,
    "lean_lora_per_image": wf_lora_per_image,
    "lean_flux_lora_per_image": wf_flux_per_image,
    "lean_zimage_turbo": wf_zimage,
    "lean_qwen_image": wf_qwen_image,
}


# ----------------------------------------------------------------------------- API copies

def api_copy(ui, object_info):
    """The API-format prompt of a UI workflow (model names as in the file; tests map them to fixtures)."""
    return _load_workflow_module().ui_to_api(ui, object_info)


def write_api_copies(object_info, names=None):
    API_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(WORKFLOWS.glob("*.json")):
        if names and path.stem not in names:
            continue
        api = api_copy(json.loads(path.read_text()), object_info)
        out = API_DIR / path.name
        out.write_text(json.dumps(api, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
        written.append(out)
    return written


def build(object_info, names=None):
    WORKFLOWS.mkdir(exist_ok=True)
    done, skipped = [], []
    for name, fn in WORKFLOWS_DEF.items():
        if names and name not in names:
            continue
        try:
            data = fn(object_info)
        except KeyError as e:
            skipped.append(f"{name}: {e.args[0] if e.args else e}")
            continue
        done.append(save(data, name))
    return done, skipped


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8188")
    p.add_argument("--object-info", help="read /object_info from this JSON file instead of a host")
    p.add_argument("--only", nargs="*", help="workflow names to write (default: all)")
    args = p.parse_args()
    proc = None
    if args.object_info:
        info = json.loads(pathlib.Path(args.object_info).read_text())
    else:
        url = args.url.rstrip("/")
        if not answering(url):
            proc, url = start_host(_free_port(), quiet=True)
        try:
            info = _get(url + "/object_info", timeout=120)
        finally:
            if proc:
                proc.terminate()
    done, skipped = build(info, args.only)
    for path in done:
        print(f"wrote {path.relative_to(REPO)}")
    for s in skipped:
        print(f"skipped {s}")
    for path in write_api_copies(info, [p.stem for p in done] if args.only else None):
        print(f"wrote {path.relative_to(REPO)}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
