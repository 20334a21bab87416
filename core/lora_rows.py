"""Which batch entry each row of one model call belongs to (pure logic, no ComfyUI imports).

How the host lays out one model call (comfy/samplers.py ``_calc_cond_batch``, read in ComfyUI 0.3.64 and 0.33.0):
the sampler runs each conditioning it has to run (the positive, the negative, an area or a combined one) as a
*chunk* that holds every row of the latent batch ``x_in``, in order; it concatenates as many chunks as memory allows
(``memory_required`` against the free memory: cond and uncond together, apart, or several of each) and says which
chunk is which in ``transformer_options["cond_or_uncond"]`` (one item per chunk).  A context window on the batch
axis (``transformer_options["context_window"]``, ``dim`` 0) runs only the rows of its ``index_list``.  Inside a
chunk, row j is latent j, and a conditioning of N entries is repeated to the latent batch
(``comfy.utils.repeat_to_batch_size``): latent j gets entry j % N, the negative's rows too.  So the entry of a row
of the model's input is ``latent % N`` with ``latent`` its place in its chunk (or the window's index of it).
"""
from __future__ import annotations


# transformer_options key under which a wrapper that splits one model call into sub-calls (nodes/_text_split.py)
# says the entry of each row of the sub-call, for the per-image LoRA branch inside it
ROW_ENTRIES_KEY = "lean_row_entries"


class RowMappingError(ValueError):
    """The model's input rows cannot be told apart by entry (the host did not say how it laid them out)."""


def row_entries(rows: int, chunks: int, n_entries: int, window=None) -> list:
    """[entry of row r for r in range(rows)].  `chunks`: how many chunks the host concatenated (len of
    cond_or_uncond); `window`: the latent indices of a batch-axis context window, or None."""
    if n_entries < 1:
        raise RowMappingError("no batch entries")
    if chunks < 1 or rows < 1 or rows % chunks:
        raise RowMappingError(f"the model got {rows} rows for {chunks} conditioning chunk(s): not a whole number of "
                              "latent batches")
    per_chunk = rows // chunks
    if window is not None:
        window = [int(i) for i in window]
        if len(window) != per_chunk:
            raise RowMappingError(f"the context window has {len(window)} latents but each chunk {per_chunk} rows")
        latents = window
    else:
        latents = range(per_chunk)
    one = [int(j) % n_entries for j in latents]
    return one * chunks
