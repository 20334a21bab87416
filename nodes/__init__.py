"""ComfyUI adapters: the only place that imports folder_paths, comfy.*, server."""
