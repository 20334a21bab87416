"""A ComfyUI-Distributed setup on this machine: a master and local workers, each a ComfyUI process on its own
loopback port with ComfyUI-Distributed installed from ../shared/peers (harness.install_peer) and this pack linked.

    with distributed.cluster(tmp_root, ckpt, workers=2) as c:    # c.master, c.workers, c.config_path
        entry = c.queue(prompt)                                    # POST /distributed/queue on the master, wait
        c.set_enabled(["w1"])                                      # the master's config, as its UI writes it

The master's gpu_config.json names the workers (127.0.0.1, their ports, type local, auto-launch off): the hosts
are started here, by PID, as ComfyUI-Distributed's docs describe for workers started by hand.  Every host runs
with the socket audit hook (refusing any non-loopback connect).
"""
import contextlib
import json
import os
import pathlib
import threading
import time
import uuid

from . import harness

PEER = "comfyui-distributed-a91f9fb.tar.gz"
CKPT = "lean_sd15.safetensors"
WORKER_TIMEOUT_S = 5  # ComfyUI-Distributed's worker timeout (settings.worker_timeout_seconds), short for tests


def _config(workers, enabled):
    return {"master": {"host": "127.0.0.1"},
            "workers": [{"id": wid, "name": f"Worker {wid}", "host": "127.0.0.1", "port": port, "type": "local",
                         "enabled": wid in enabled} for wid, port in workers],
            "settings": {"debug": True, "auto_launch_workers": False, "stop_workers_on_master_exit": False,
                         "master_delegate_only": False, "websocket_orchestration": True,
                         "worker_timeout_seconds": WORKER_TIMEOUT_S}}


class Cluster:
    def __init__(self, master, workers, config_path, ports):
        self.master = master
        self.workers = workers          # {worker id: ComfyHost}
        self.config_path = config_path  # the master's ComfyUI-Distributed config
        self.ports = ports              # [(worker id, port)]
        self.enabled = [wid for wid, _ in ports]

    def set_enabled(self, ids):
        """Enable only `ids` in the master's config (what unticking a worker in ComfyUI-Distributed's panel does)."""
        self.enabled = list(ids)
        self.config_path.write_text(json.dumps(_config(self.ports, self.enabled), indent=1))
        t = time.time() + 1.0  # its config cache is keyed by the file's mtime
        os.utime(self.config_path, (t, t))

    def submit(self, prompt):
        status, data = self.master.request("/distributed/queue", {"prompt": prompt, "client_id": uuid.uuid4().hex,
                                                                  "enabled_worker_ids": self.enabled})
        if status != 200:
            raise harness.PromptFailed(f"/distributed/queue refused the prompt ({status}): {json.dumps(data)[:4000]}")
        return data

    def queue(self, prompt, timeout=600):
        """Queue through ComfyUI-Distributed and wait for the master's history entry."""
        data = self.submit(prompt)
        return self.master.wait(data["prompt_id"], timeout), data


def _base(tmp_root, tag, ckpt, setup):
    base = harness.make_base_dir(pathlib.Path(tmp_root) / tag)
    harness.install_peer(base, PEER)
    harness.link_model(base, "checkpoints", ckpt, CKPT)
    if setup:
        setup(base)
    return base


@contextlib.contextmanager
def cluster(tmp_root, ckpt, workers=2, setup=None, audit=True):
    """A master and `workers` local workers (ids w1, w2, ...), started in parallel; all stopped on leaving."""
    path = harness.require_host()
    ports = [(f"w{i + 1}", harness.free_port()) for i in range(workers)]
    bases = {wid: _base(tmp_root, wid, ckpt, setup) for wid, _ in ports}
    mbase = _base(tmp_root, "master", ckpt, setup)
    peer_dirs = [p for p in (mbase / "custom_nodes").iterdir() if p.is_dir() and (p / "distributed.py").is_file()]
    config_path = peer_dirs[0] / "gpu_config.json"
    config_path.write_text(json.dumps(_config(ports, [w for w, _ in ports]), indent=1))
    started, errors = {}, []

    def start(key, base, port, env):
        try:
            started[key] = harness.ComfyHost.start(path, base, port=port, env=env, audit_sockets=audit,
                                                   refuse_sockets=audit)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{key}: {e}")

    worker_env = dict(os.environ, COMFYUI_IS_WORKER="1")  # what ComfyUI-Distributed sets on workers it launches
    threads = [threading.Thread(target=start, args=(wid, bases[wid], port, worker_env)) for wid, port in ports]
    threads.append(threading.Thread(target=start, args=("master", mbase, None, None)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise RuntimeError("a host of the ComfyUI-Distributed setup did not start: " + "; ".join(errors))
        yield Cluster(started["master"], {wid: started[wid] for wid, _ in ports}, config_path, ports)
    finally:
        for host in started.values():
            host.stop()
