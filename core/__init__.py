"""Pure logic: never imports comfy, folder_paths, server or nodes."""
