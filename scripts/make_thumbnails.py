#!/usr/bin/env python3
"""Make the template-browser thumbnails example_workflows/<name>.jpg from screenshots of the dropped workflows.

    LEAN_SCREENSHOTS=/tmp/shots flock /tmp/lean-heavy.lock python -m pytest tests/test_tier2_browser.py -k dropped
    python scripts/make_thumbnails.py /tmp/shots

The browser test saves one PNG per workflow (the editor in focus mode, graph only) in $LEAN_SCREENSHOTS; this
script scales each to a small JPEG next to its workflow file.  Only screenshots of existing workflows are used.
"""
import argparse
import pathlib
import sys

from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows"


def thumbnail(png, jpg, width=640, quality=80):
    with Image.open(png) as im:
        im = im.convert("RGB")
        h = round(im.height * width / im.width)
        im = im.resize((width, h), Image.LANCZOS)
        im.save(jpg, "JPEG", quality=quality, optimize=True, progressive=True)
    return jpg


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("screenshots", type=pathlib.Path)
    p.add_argument("--width", type=int, default=640)
    args = p.parse_args()
    made = 0
    for wf in sorted(WORKFLOWS.glob("*.json")):
        png = args.screenshots / f"{wf.stem}.png"
        if not png.is_file():
            print(f"no screenshot for {wf.name} ({png})", file=sys.stderr)
            continue
        jpg = thumbnail(png, wf.with_suffix(".jpg"), args.width)
        print(f"wrote {jpg.relative_to(REPO)} ({jpg.stat().st_size // 1024} KiB)")
        made += 1
    return 0 if made else 1


if __name__ == "__main__":
    sys.exit(main())
