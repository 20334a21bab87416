"""Tier 1: the LLM prompt writer's core (no host).  Real llama_cpp on tiny generated GGUF models, a real
`python -m llama_cpp.server` for the openai backend; reference results come from llama_cpp's own API, the
`gguf` package's reader or a plain HTTP request, never from core/llm*.py."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import re

import pytest

from lean_testlib import REPO, prereq, tiny_gguf
from lean_nodes.core import llm, llm_backends, llm_gguf
from lean_nodes.core.llm_text import (IMAGE_STYLES, STYLE_PRESETS, STYLES, build_messages, clean_prompt, opens_think,
                                      render_chat, split_thinking)


def has_llama_cpp():
    try:
        import llama_cpp  # noqa: F401
        return True
    except ImportError:
        return False


needs_llama = pytest.mark.skipif(not has_llama_cpp(), reason=prereq("llama-cpp-python not installed: "
                                 "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install llama-cpp-python"))

MESSAGES = build_messages("a red fox in the snow", "SD1.5 tags")
SAMPLING = dict(temperature=0.7, top_p=0.9)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def cache():
    c = llm.ModelCache()
    yield c
    c.free()


# ------------------------------------------------------------------ generator

@pytest.mark.parametrize("template,qtype", [("chatml", "Q8_0"), ("r1", "Q4_0")])
def test_tiny_gguf_is_byte_identical_every_time(tmp_path, template, qtype):
    a = tiny_gguf.write_model(tmp_path / "a.gguf", template=template, qtype=qtype, seed=3)
    b = tiny_gguf.write_model(tmp_path / "b.gguf", template=template, qtype=qtype, seed=3)
    c = tiny_gguf.write_model(tmp_path / "c.gguf", template=template, qtype=qtype, seed=4)
    assert sha(a) == sha(b)
    assert sha(a) != sha(c)
    assert sha(tiny_gguf.tiny_model(template, qtype)) == sha(
        tiny_gguf.write_model(tmp_path / "d.gguf", template=template, qtype=qtype, seed=0))


def test_tiny_gguf_layout_read_by_the_gguf_package():
    import gguf
    r = gguf.GGUFReader(str(tiny_gguf.tiny_model("r1", "Q4_0")))
    f = {k: v for k, v in r.fields.items()}
    assert bytes(f["general.architecture"].parts[-1]).decode() == "qwen2"
    assert int(f["qwen2.block_count"].parts[-1][0]) == 2
    assert int(f["qwen2.embedding_length"].parts[-1][0]) == 64
    tokens = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data]
    for special in ("<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert special in tokens
    assert "<think>" in bytes(f["tokenizer.chat_template"].parts[-1]).decode()
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["token_embd.weight"] == "Q4_0"
    assert types["blk.0.attn_norm.weight"] == "F32"


def test_metadata_reader_matches_gguf_package():
    import gguf
    path = tiny_gguf.tiny_model("r1")
    meta = llm_gguf.read_metadata(path)
    r = gguf.GGUFReader(str(path))
    assert meta["general.architecture"] == bytes(r.fields["general.architecture"].parts[-1]).decode()
    assert meta["tokenizer.chat_template"] == bytes(r.fields["tokenizer.chat_template"].parts[-1]).decode()
    assert meta["qwen2.context_length"] == int(r.fields["qwen2.context_length"].parts[-1][0])
    assert meta["__n_tensors__"] == len(r.tensors)


# ------------------------------------------------------------------ text logic

def test_think_both_tags():
    s = split_thinking("<think>\nThe user wants a fox.\n</think>\n\nred fox, snow, winter, masterpiece")
    assert s.prompt == "red fox, snow, winter, masterpiece"
    assert s.thinking == "The user wants a fox."
    assert not s.truncated


def test_think_opening_tag_missing():
    # R1 templates put <think> in the prompt; servers return the text without it
    s = split_thinking("Okay, a fox.\nMaybe snow.</think>red fox, snow")
    assert (s.prompt, s.thinking, s.truncated) == ("red fox, snow", "Okay, a fox.\nMaybe snow.", False)


def test_think_opened_by_template():
    s = split_thinking("\nOkay, a fox.\n</think>\n\nred fox", opened=True)
    assert (s.prompt, s.thinking, s.truncated) == ("red fox", "Okay, a fox.", False)


@pytest.mark.parametrize("text,opened", [("<think>\nOkay, the user wants a fox. Let me", False),
                                         ("Okay, the user wants a fox. Let me", True),
                                         ("", True)])
def test_think_truncated_mid_thought_gives_no_prompt(text, opened):
    s = split_thinking(text, opened=opened)
    assert s.truncated
    assert s.prompt == ""
    assert "<think>" not in s.thinking
    r = llm.PromptResult(s.prompt, s.thinking, s.truncated, 7, "length", text)
    assert "max_tokens (7) ran out" in r.message(7) and "Raise max_tokens" in r.message(7)


def test_think_several_blocks_and_server_reasoning():
    s = split_thinking("<think>a</think>red <think>b</think>fox", reasoning="server side")
    assert s.prompt == "red fox"
    assert s.thinking == "server side\n\na\n\nb"
    s = split_thinking("red fox, snow", reasoning="thought apart")
    assert (s.prompt, s.thinking) == ("red fox, snow", "thought apart")


def test_no_think_and_cleanup():
    assert split_thinking("  red fox, snow \n").prompt == "red fox, snow"
    assert clean_prompt('Prompt: "red fox, snow"') == "red fox, snow"
    assert clean_prompt("**Final prompt:** red fox") == "red fox"
    assert clean_prompt("```text\nred fox, snow\n```") == "red fox, snow"
    assert clean_prompt("a cat's toy") == "a cat's toy"


def test_presets_and_bad_inputs():
    # saved workflows store the style by value and the list by position: the first four stay, in order
    assert STYLES[:4] == ["SD1.5 tags", "SDXL", "Flux / prose", "custom"]
    for style in STYLES[:3]:
        msgs = build_messages("a fox", style)
        assert msgs[0]["content"] == STYLE_PRESETS[style] and msgs[1] == {"role": "user", "content": "a fox"}
    assert build_messages("a fox", "custom", "Be brief.")[0]["content"] == "Be brief."
    with pytest.raises(ValueError, match="'idea' is empty"):
        build_messages("  ", "SDXL")
    with pytest.raises(ValueError, match="system_prompt' is empty"):
        build_messages("a fox", "custom", "")
    with pytest.raises(ValueError, match="unknown style"):
        build_messages("a fox", "anime")


def test_image_styles_and_messages():
    assert STYLES[4:] == IMAGE_STYLES == ["describe for SD1.5", "describe for SDXL", "describe for Flux",
                                          "describe for Z-Image", "caption (training data, one line)", "tags"]
    for style in IMAGE_STYLES:
        assert build_messages("", style, image=True)[1]["content"] == "Describe this image."
        steered = build_messages("  make it winter ", style, image=True)[1]["content"]
        assert steered == "Describe this image, changed as follows: make it winter"
        with pytest.raises(ValueError, match=f"style '{re.escape(style)}' describes an image, but no image"):
            build_messages("a fox", style)
    # a text style with an image: the idea goes as it is, the image beside it
    assert build_messages("a fox", "SDXL", image=True)[1]["content"] == "a fox"
    assert build_messages("", "SDXL", image=True)[1]["content"] == "Describe this image."


@needs_llama
@pytest.mark.parametrize("template", ["chatml", "r1"])
def test_chat_template_from_gguf_matches_llama_cpp_formatter(template):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    meta = llm_gguf.read_metadata(tiny_gguf.tiny_model(template))
    ref = Jinja2ChatFormatter(meta["tokenizer.chat_template"], eos_token="<|im_end|>",
                              bos_token="<|endoftext|>")(messages=MESSAGES).prompt
    ours = render_chat(meta["tokenizer.chat_template"], MESSAGES, "<|endoftext|>", "<|im_end|>")
    assert ours == ref
    assert opens_think(ours) == (template == "r1")


def test_template_without_system_role_gets_it_folded():
    tpl = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
           "[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    out = render_chat(tpl, build_messages("a fox", "custom", "Be brief."))
    assert out == "[user]Be brief.\n\na fox"


# ------------------------------------------------------------------ llama_cpp backend

def raw_llama(path, n_ctx=512):
    import llama_cpp
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False)


def raw_chat(raw, seed, max_tokens, messages=MESSAGES, temperature=0.7, top_p=0.9):
    """The reference: llama_cpp's own pieces (its Jinja2ChatFormatter on the GGUF's template, Llama.generate,
    Llama.detokenize), same sampler settings.  (create_chat_completion is not used: it can return more than
    max_tokens tokens when a token ends in a partial UTF-8 sequence.)"""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    fmt = Jinja2ChatFormatter(raw.metadata["tokenizer.chat_template"], eos_token="<|im_end|>",
                              bos_token="<|endoftext|>")
    prompt = fmt(messages=messages).prompt
    tokens = raw.tokenize(prompt.encode(), add_bos=False, special=True)
    raw.reset()
    raw.set_seed(seed)
    out = []
    for t in raw.generate(tokens, top_k=40, top_p=top_p, min_p=0.05, temp=temperature, repeat_penalty=1.0):
        if llama_cpp.llama_vocab_is_eog(raw._model.vocab, t):
            break
        out.append(t)
        if len(out) == max_tokens:
            break
    return raw.detokenize(out).decode("utf-8", errors="ignore"), len(out)


@needs_llama
@pytest.mark.parametrize("template,qtype", [("chatml", "Q8_0"), ("chatml", "Q4_0"), ("r1", "Q8_0")])
def test_generation_matches_raw_llama_cpp_and_repeats(cache, template, qtype):
    path = tiny_gguf.tiny_model(template, qtype)
    h = llm.load("llama_cpp", path=str(path), n_ctx=512, cache=cache)
    model = h.model()
    raw = raw_llama(path)
    for seed in (1, 2, 12345678901):
        pieces = []
        g1 = model.generate(MESSAGES, seed=seed, max_tokens=40, on_text=lambda p, n: pieces.append(p), **SAMPLING)
        g2 = model.generate(MESSAGES, seed=seed, max_tokens=40, **SAMPLING)
        ref_text, ref_n = raw_chat(raw, llm_backends.seed32(seed), 40, **SAMPLING)
        assert g1.text == g2.text, "same seed and inputs must give the same text"
        assert "".join(pieces) == g1.text, "the streamed pieces must add up to the text"
        assert (g1.text, g1.n_tokens) == (ref_text, ref_n)
        assert g1.opened_think == (template == "r1")
    other = model.generate(MESSAGES, seed=99, max_tokens=40, **SAMPLING)
    assert other.text != g1.text
    raw.close()


@needs_llama
def test_write_prompt_r1_template_keeps_reasoning_out(cache):
    """The R1 template opens <think> in the prompt; a random-weight model never closes it, so the run ends
    inside the reasoning: prompt must be empty and the text must be on 'thinking' only."""
    h = llm.load("llama_cpp", path=str(tiny_gguf.tiny_model("r1")), n_ctx=512, cache=cache)
    for seed in range(1, 30):
        r = llm.write_prompt(h, "a red fox", "SD1.5 tags", seed=seed, max_tokens=24, **SAMPLING)
        if "think>" not in r.raw and r.raw.strip():
            break
    else:
        pytest.fail("no seed gave a tag-free sample")
    assert r.truncated and r.prompt == "" and r.finish == "length"
    assert r.thinking == r.raw.strip()
    assert r.message(24).startswith("No prompt")


@needs_llama
def test_seed_is_32_bit_and_never_llama_random():
    assert llm_backends.seed32(0xFFFFFFFF) == 0
    assert llm_backends.seed32(2**64 - 1) != 0xFFFFFFFF
    assert 0 <= llm_backends.seed32(2**63) < 0xFFFFFFFF


@needs_llama
def test_cancel_between_tokens_then_runs_again_identically(cache):
    model = llm.load("llama_cpp", path=str(tiny_gguf.tiny_model()), n_ctx=512, cache=cache).model()
    full = model.generate(MESSAGES, seed=5, max_tokens=30, **SAMPLING)

    class Cancelled(Exception):
        pass

    seen = []

    def cancel_at_5(piece, n):
        seen.append(n)
        if n == 5:
            raise Cancelled()

    with pytest.raises(Cancelled):
        model.generate(MESSAGES, seed=5, max_tokens=30, on_text=cancel_at_5, **SAMPLING)
    assert seen == [1, 2, 3, 4, 5]
    assert model.generate(MESSAGES, seed=5, max_tokens=30, **SAMPLING).text == full.text


@needs_llama
def test_cache_second_load_costs_nothing_and_settings_change_replaces(cache):
    path = str(tiny_gguf.tiny_model())
    h1 = llm.load("llama_cpp", path=path, n_ctx=512, cache=cache)
    m1 = h1.model()
    h2 = llm.load("llama_cpp", path=path, n_ctx=512, cache=cache)
    assert cache.loads == 1 and h2.model() is m1
    h3 = llm.load("llama_cpp", path=path, n_ctx=1024, cache=cache)
    assert cache.loads == 2 and len(cache) == 1, "one local model at a time"
    assert m1.llm is None, "the replaced model was closed"
    assert h3.model().n_ctx == 1024
    # keep_loaded=False frees after the run; the handle reloads on the next run
    r1 = llm.write_prompt(h3, "a fox", seed=1, max_tokens=8, keep_loaded=False, **SAMPLING)
    assert not h3.is_loaded() and len(cache) == 0
    r2 = llm.write_prompt(h3, "a fox", seed=1, max_tokens=8, **SAMPLING)
    assert r1.raw == r2.raw and h3.is_loaded() and cache.loads == 3
    assert llm.free_all(cache) == 1 and len(cache) == 0


@needs_llama
def test_prompt_longer_than_context_is_a_clear_error(cache):
    h = llm.load("llama_cpp", path=str(tiny_gguf.tiny_model()), n_ctx=256, cache=cache)
    with pytest.raises(ValueError, match="raise n_ctx"):
        llm.write_prompt(h, "fox " * 400, seed=1, max_tokens=8)


# ------------------------------------------------------------------ bad files

def test_not_a_gguf_file(tmp_path, cache):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(ValueError, match=r"'model.gguf' is not a GGUF file.*convert"):
        llm.load("llama_cpp", path=str(p), cache=cache)


def test_truncated_gguf(tmp_path, cache):
    p = tmp_path / "half.gguf"
    p.write_bytes(tiny_gguf.tiny_model().read_bytes()[:200])
    with pytest.raises(ValueError, match="half.gguf.*(truncated|corrupt)"):
        llm.load("llama_cpp", path=str(p), cache=cache)


def test_missing_file_and_no_model(cache):
    with pytest.raises(FileNotFoundError, match="not found"):
        llm.load("llama_cpp", path="/nonexistent/x.gguf", cache=cache)
    with pytest.raises(ValueError, match="no model selected"):
        llm.load("llama_cpp", path="", cache=cache)
    with pytest.raises(ValueError, match="unknown backend"):
        llm.load("ollama", cache=cache)


@needs_llama
def test_unknown_architecture(tmp_path, cache):
    p = tiny_gguf.write_unknown_arch(tmp_path / "future.gguf")
    with pytest.raises(ValueError, match=r"could not load 'future.gguf' \(architecture 'lean_nonexistent_arch'"):
        llm.load("llama_cpp", path=str(p), cache=cache)
    assert len(cache) == 0


def test_diffusion_gguf_in_the_llm_folder(tmp_path, cache):
    p = tiny_gguf.write_model(tmp_path / "flux1-dev-Q4_0.gguf", arch="llama", arch_name="flux")
    with pytest.raises(ValueError, match=r"'flux1-dev-Q4_0.gguf' is a GGUF image/video model.*'flux'.*not a language"):
        llm.load("llama_cpp", path=str(p), cache=cache)


@needs_llama
def test_context_full_is_reported(cache):
    h = llm.load("llama_cpp", path=str(tiny_gguf.tiny_model("r1")), n_ctx=256, cache=cache)
    n_prompt = h.model().generate(MESSAGES, seed=1, max_tokens=1).prompt_tokens
    for seed in range(1, 40):
        r = llm.write_prompt(h, "a red fox in the snow", "SD1.5 tags", seed=seed, max_tokens=4000, **SAMPLING)
        if r.finish == "context":
            break
    else:
        pytest.fail("every seed hit end-of-text before the context filled")
    assert r.n_tokens == 256 - n_prompt
    assert "the context (n_ctx) filled up" in r.message(4000) or not r.truncated


def test_missing_llama_cpp_says_how_to_install(monkeypatch, cache):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    with pytest.raises(ImportError) as e:
        llm.load("llama_cpp", path=str(tiny_gguf.tiny_model()), cache=cache)
    msg = str(e.value)
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF" python -m pip install llama-cpp-python' in msg
    assert "backend 'openai'" in msg


def test_core_import_is_light():
    code = ("import sys, time; sys.path.insert(0, %r); import conftest; t=time.perf_counter();"
            "import lean_nodes.core.llm; dt=time.perf_counter()-t;"
            "print([m for m in ('llama_cpp','gguf','jinja2','numpy') if m in sys.modules])" % str(REPO / "tests"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO / "tests"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


# ------------------------------------------------------------------ openai backend

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_server():
    try:
        import llama_cpp.server.app  # noqa: F401
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if not has_server():
        pytest.skip(prereq("llama_cpp.server needs: pip install 'llama-cpp-python[server]'"))
    port = free_port()
    path = tiny_gguf.tiny_model("r1")
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host",
                                 "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--model_alias", "tiny-r1"],
                                stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    t0 = time.time()
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=1).read()
            break
        except Exception:
            if proc.poll() is not None or time.time() - t0 > 60:
                proc.kill()
                pytest.fail("llama_cpp.server did not start:\n" + log.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def plain_request(url, seed, max_tokens):
    body = dict(messages=MESSAGES, seed=seed, max_tokens=max_tokens, stream=False, **SAMPLING)
    req = urllib.request.Request(url + "/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        d = json.loads(r.read())
    return d["choices"][0]["message"]["content"], d["usage"]["completion_tokens"]


def test_openai_backend_streams_what_the_server_generates(llama_server, cache):
    h = llm.load("openai", base_url=llama_server, model_id="", cache=cache)
    model = h.model()
    assert model.model_id == "tiny-r1", "empty model_id picks the first model the server lists"
    pieces = []
    g = model.generate(MESSAGES, seed=7, max_tokens=20, on_text=lambda p, n: pieces.append((p, n)), **SAMPLING)
    ref_text, ref_n = plain_request(llama_server, 7, 20)
    assert g.text == ref_text
    assert "".join(p for p, _ in pieces) == g.text
    assert [n for _, n in pieces] == list(range(1, len(pieces) + 1)) and len(pieces) <= ref_n
    assert model.generate(MESSAGES, seed=7, max_tokens=20, **SAMPLING).text == g.text
    r = llm.write_prompt(h, "a red fox in the snow", "SD1.5 tags", seed=7, max_tokens=20, **SAMPLING)
    assert r.raw == ref_text


def test_openai_backend_errors(llama_server, cache):
    with pytest.raises(ValueError, match=r"model_id 'nope' is not served.*tiny-r1"):
        llm.load("openai", base_url=llama_server, model_id="nope", cache=cache)
    port = free_port()
    with pytest.raises(ConnectionError, match=rf"cannot reach .*127.0.0.1:{port}/v1.*fix base_url"):
        llm.load("openai", base_url=f"http://127.0.0.1:{port}", cache=cache)
    with pytest.raises(ValueError, match="not an http"):
        llm.load("openai", base_url="127.0.0.1:8080", cache=cache)


def test_openai_backend_parses_reasoning_content(cache):
    """Servers with a reasoning parser (llama.cpp --reasoning-format, vLLM, LM Studio) send reasoning apart."""
    import http.server
    import threading

    chunks = [{"choices": [{"delta": {"reasoning_content": "Think "}}]},
              {"choices": [{"delta": {"reasoning_content": "hard."}}]},
              {"choices": [{"delta": {"content": "red fox"}}]},
              {"choices": [{"delta": {}, "finish_reason": "stop"}]}]

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"data": [{"id": "m"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for c in chunks:
                self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        h = llm.load("openai", base_url=f"http://127.0.0.1:{srv.server_port}/v1", cache=cache)
        r = llm.write_prompt(h, "a fox", seed=1, max_tokens=10)
        assert (r.prompt, r.thinking, r.finish, r.n_tokens) == ("red fox", "Think hard.", "stop", 3)
    finally:
        srv.shutdown()
