#!/usr/bin/env python3
"""Write locales/en/nodeDefs.json from the host's /object_info (display names, descriptions, input names and
tooltips, output names and tooltips of every Lean node), and report what locales/zh/nodeDefs.json lacks.

    python scripts/make_locales.py [--url http://127.0.0.1:8188]

The English file is generated so it never drifts from the nodes; the Chinese file is translated by hand and
tests/test_tier2_locales.py checks it covers every node, input and output the English one has.
"""
import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from lean import _get, answering, start_host, _free_port  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def en_node_defs(object_info):
    defs = {}
    for name in sorted(k for k in object_info if k.startswith("Lean")):
        info = object_info[name]
        inputs = {}
        for group in ("required", "optional"):
            for inp, spec in (info["input"].get(group) or {}).items():
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                inputs[inp] = {"name": inp, "tooltip": opts.get("tooltip", "")}
        outputs = {}
        tips = info.get("output_tooltips") or []
        for i, oname in enumerate(info.get("output_name") or info["output"]):
            outputs[str(i)] = {"name": oname}
            if i < len(tips) and tips[i]:
                outputs[str(i)]["tooltip"] = tips[i]
        defs[name] = {"display_name": info["display_name"], "description": info.get("description", ""),
                      "inputs": inputs, "outputs": outputs}
    return defs


def missing_in(translated, reference):
    """Paths present in reference (en) but absent or empty in translated (zh)."""
    gaps = []
    for node, d in reference.items():
        t = translated.get(node)
        if not t:
            gaps.append(node)
            continue
        for key in ("display_name", "description"):
            if d.get(key) and not t.get(key):
                gaps.append(f"{node}.{key}")
        for section in ("inputs", "outputs"):
            for k, v in d.get(section, {}).items():
                tv = t.get(section, {}).get(k, {})
                for field in v:
                    if v[field] and not tv.get(field):
                        gaps.append(f"{node}.{section}.{k}.{field}")
    return gaps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:8188")
    args = p.parse_args()
    url, proc = args.url, None
    if not answering(url):
        proc, url = start_host(_free_port(), quiet=True)
    try:
        defs = en_node_defs(_get(url + "/object_info", timeout=120))
    finally:
        if proc:
            proc.terminate()
    out = REPO / "locales" / "en" / "nodeDefs.json"
    out.write_text(json.dumps(defs, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out} ({len(defs)} nodes)")
    zh = REPO / "locales" / "zh" / "nodeDefs.json"
    gaps = missing_in(json.loads(zh.read_text()) if zh.exists() else {}, defs)
    print(f"zh lacks {len(gaps)} entries" + ("".join(f"\n  {g}" for g in gaps[:50])))


if __name__ == "__main__":
    main()
