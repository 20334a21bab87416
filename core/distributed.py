"""Prompt Batch shared out over ComfyUI-Distributed participants (pure logic, no host imports).

ComfyUI-Distributed (a peer pack) runs one workflow on a master and its workers and gathers their images on the
master, master first, then each worker in the order of its config.  Prompt Batch gives participant k of P the
contiguous slice share(N, P, k) of the N prompts, so the gathered images are in prompt order.

Only the workers of ComfyUI-Distributed's own config (gpu_config.json, written by the user) are ever asked anything
(ask()); a workflow names none.
"""
import json
import urllib.error
import urllib.parse
import urllib.request

ASK_TIMEOUT_S = 3.0
MAX_ANSWER_BYTES = 64 << 20


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A worker's answer may not send the pack on to another address (the user named the worker, not where it
    points): a redirect is an error naming both."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused: ask the worker itself "
                                     "(its address in ComfyUI-Distributed's config)", headers, fp)


# every request goes straight to the worker the user named: never through HTTP(S)_PROXY, never redirected
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def share(n, parts, index):
    """[start, end) of participant `index` of `parts` over n entries: contiguous, in order, sizes differing by at
    most one (the first n % parts participants take one more)."""
    if parts < 1 or not 0 <= index < parts:
        raise ValueError(f"participant {index} of {parts} does not exist")
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def slices_text(n, participants, names=None):
    """'master: prompts 1-4, worker "A" (id 1): prompts 5-7, ...' (1-based, as the user counts them)."""
    names = names or {}
    out = []
    for k, who in enumerate(participants):
        a, b = share(n, len(participants), k)
        label = "master" if k == 0 else f"worker {names.get(who, who)!r} (id {who})"
        out.append(f"{label}: " + (f"prompts {a + 1}-{b}" if b - a > 1 else f"prompt {a + 1}" if b > a else "none"))
    return ", ".join(out)


def config_workers(data):
    """{worker id: {"name", "url", "enabled"}} of a ComfyUI-Distributed config (its gpu_config.json as a dict), each
    worker's address built as ComfyUI-Distributed builds it: its host (else this machine, 127.0.0.1) and port, https
    for type "cloud" or port 443, a host given with its scheme taken as it is."""
    out = {}
    workers = data.get("workers", []) if isinstance(data, dict) else []
    for w in workers if isinstance(workers, list) else []:
        if not isinstance(w, dict) or not str(w.get("id") or "").strip():
            continue
        host = str(w.get("host") or "").strip() or "127.0.0.1"
        try:
            port = int(w.get("port", w.get("listen_port", 8188)) or 8188)
        except (TypeError, ValueError):
            port = 8188
        if host.startswith(("http://", "https://")):
            url = host.rstrip("/")
        else:
            https = w.get("type") == "cloud" or port == 443
            url = f"{'https' if https else 'http'}://{host}" + ("" if port == (443 if https else 80) else f":{port}")
        wid = str(w["id"]).strip()
        out[wid] = {"name": str(w.get("name") or wid), "url": url, "enabled": bool(w.get("enabled", False))}
    return out


def ask(url, path, timeout=ASK_TIMEOUT_S):
    """GET url+path as JSON (no proxy, bounded size and time).  Raises OSError/ValueError."""
    with _OPENER.open(url.rstrip("/") + path, timeout=timeout) as r:
        data = r.read(MAX_ANSWER_BYTES + 1)
    if len(data) > MAX_ANSWER_BYTES:
        raise ValueError(f"{url}{path}: answer larger than {MAX_ANSWER_BYTES} bytes")
    return json.loads(data)


def job_in_history(history, job, collector_class):
    """What a worker's /history says of the distributed job `job`: ("error", text), ("success", None),
    ("running", None) or (None, None) when no entry of it is there.  An entry's prompt is [number, id, prompt, ...];
    the job id is the multi_job_id input of its collector."""
    if not isinstance(history, dict):
        return None, None
    for entry in history.values():
        try:
            prompt = entry["prompt"][2]
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(prompt, dict) or not any(
                isinstance(n, dict) and n.get("class_type") == collector_class
                and (n.get("inputs") or {}).get("multi_job_id") == job for n in prompt.values()):
            continue
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            for kind, msg in status.get("messages") or []:
                if kind == "execution_error" and isinstance(msg, dict):
                    return "error", (f"{msg.get('node_type')} #{msg.get('node_id')}: {msg.get('exception_type')}: "
                                     f"{msg.get('exception_message')}").strip()
            return "error", "failed (no error message in its history)"
        return ("success", None) if status.get("completed") else ("running", None)
    return None, None


def diagnose(layout, workers, collector_class, asker=ask):
    """One line per worker of the run: does it answer, and what does its /history say of this job.  Only the workers
    of `workers` (the user's config) are asked; an id missing there is reported, not guessed."""
    lines = []
    for wid in layout["participants"][1:]:
        w = workers.get(wid)
        if w is None:
            lines.append(f"worker id {wid}: not in ComfyUI-Distributed's config, so not asked")
            continue
        who = f"worker {w['name']!r} (id {wid}, {w['url']})"
        try:
            asker(w["url"], "/system_stats")
        except Exception as e:  # noqa: BLE001 - any failure means "does not answer"
            lines.append(f"{who} does not answer ({type(e).__name__}: {e}): stopped, crashed or unreachable")
            continue
        try:
            state, text = job_in_history(asker(w["url"], "/history?max_items=64"), layout["job"], collector_class)
        except Exception as e:  # noqa: BLE001
            lines.append(f"{who} answers, but its /history could not be read ({type(e).__name__}: {e})")
            continue
        lines.append(f"{who}: " + {"error": f"its run failed: {text}",
                                    "success": "its run finished (its images were sent)",
                                    "running": "still running when the collector stopped waiting "
                                               "(raise ComfyUI-Distributed's worker timeout)",
                                    None: "this job is not in its history (it never ran it)"}[state])
    return lines
