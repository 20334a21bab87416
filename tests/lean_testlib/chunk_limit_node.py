"""A test-only custom node (not part of the pack): makes the host's sampler split its batch as it does when memory is
short, and records how each model call was laid out.

TestChunkLimit_lean(model, chunks, name) returns a clone of the model with two host wrappers:
- CALC_COND_BATCH: for the duration of the host's own ``_calc_cond_batch``, the model's ``memory_usage_factor`` is set
  so that ``memory_required`` of `chunks` conditioning chunks x 1.5 fits in the free memory the host reads and one
  more chunk does not; the host's memory-fit loop (comfy/samplers.py) then runs cond and uncond apart (chunks=1) or
  in groups, exactly as under memory pressure.  The factor is restored afterwards.
- APPLY_MODEL: appends each call's ``transformer_options["cond_or_uncond"]`` and its number of input rows to
  <output>/probe/<name>.json, so a test can see the split really happened.
"""
import json
import os


def _free_memory(model, device):
    import comfy.model_management
    patcher = getattr(model, "current_patcher", None)
    fn = getattr(patcher, "get_free_memory", None)  # 0.33: the patcher's; 0.3.64: the memory manager's
    return fn(device) if fn is not None else comfy.model_management.get_free_memory(device)


class _Limit:
    def __init__(self, chunks):
        self.chunks = chunks

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        old = model.memory_usage_factor
        free = _free_memory(model, x_in.device)
        shape = list(x_in.shape)
        per = [model.memory_required([k * shape[0]] + shape[1:]) / old for k in (self.chunks, self.chunks + 1)]
        model.memory_usage_factor = free / (1.5 * (per[0] + per[1]) / 2)
        try:
            return executor(model, conds, x_in, timestep, model_options)
        finally:
            model.memory_usage_factor = old


class _Record:
    def __init__(self, path):
        self.path = path

    def __call__(self, executor, x, t, *args, **kwargs):
        topts = args[3] if len(args) > 3 else kwargs.get("transformer_options", {})
        calls = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                calls = json.load(f)
        calls.append({"cond_or_uncond": list(topts.get("cond_or_uncond", [])), "rows": int(x.shape[0])})
        with open(self.path, "w") as f:
            json.dump(calls, f)
        return executor(x, t, *args, **kwargs)


class TestChunkLimit_lean:
    DESCRIPTION = "Test: the sampler runs at most `chunks` conditioning chunks per model call (as short of memory)."
    CATEGORY = "testing"
    FUNCTION = "limit"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "model"}),
                             "chunks": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "chunks per call"}),
                             "name": ("STRING", {"default": "chunks", "tooltip": "record file stem"})}}

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")

    def limit(self, model, chunks, name):
        import comfy.patcher_extension as pe
        import folder_paths
        out = os.path.join(folder_paths.get_output_directory(), "probe")
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, name + ".json")
        if os.path.exists(path):
            os.remove(path)
        m = model.clone()
        m.add_wrapper_with_key(pe.WrappersMP.CALC_COND_BATCH, "lean_test_limit", _Limit(chunks))
        m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "lean_test_record", _Record(path))
        return (m,)


NODE_CLASS_MAPPINGS = {"TestChunkLimit_lean": TestChunkLimit_lean}


def install(base):
    from .probe_node import link_into
    return link_into(base, __file__, "lean_test_chunk_limit")
