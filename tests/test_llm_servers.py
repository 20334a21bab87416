"""Tier 1: where the openai backend may connect and where LEAN_LLM_API_KEY may go (core/llm_servers.py), decided by
the user's list (LEAN_LLM_SERVERS, the Settings entry), never by base_url alone.

What a server received is recorded by the server itself (real loopback HTTP servers in threads).  Every test that
names the documentation address 192.0.2.1 (RFC 5737) runs under ``socket_audit.refuse_non_loopback()``: a connect or
name lookup to anything but loopback raises in this process, and every socket event is listed, so "refused before
any connection" is checked on what the process really did."""
import sys
import types

import pytest

from lean_nodes.core import llm, llm_backends, llm_servers
from lean_nodes.core.llm_servers import ServerList, ServerPolicyError, check, is_loopback, parse_origin
from lean_testlib import socket_audit
from lean_testlib.fake_openai import FakeOpenAI

KEY = "sk-lean-servers-test-0123456789"
DOC_IP = "192.0.2.1"  # TEST-NET-1: never reachable, and refused by the hook anyway


@pytest.fixture
def servers():
    made = []

    def make(**kw):
        made.append(FakeOpenAI(**kw))
        return made[-1]
    yield make
    for s in made:
        s.close()


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("LEAN_LLM_SERVERS", raising=False)
    monkeypatch.delenv("LEAN_LLM_API_KEY", raising=False)
    return monkeypatch


# ------------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize("url, origin", [
    ("http://127.0.0.1:8080/v1", ("http", "127.0.0.1", 8080)),
    ("HTTP://LocalHost/v1", ("http", "localhost", 80)),
    ("https://llm.example.org", ("https", "llm.example.org", 443)),
    ("http://[::1]:11434/v1", ("http", "::1", 11434)),
    ("http://[2001:db8::5]:8000", ("http", "2001:db8::5", 8000)),
    ("http://127.5.6.7:1", ("http", "127.5.6.7", 1)),
    ("http://192.168.1.20:65535/", ("http", "192.168.1.20", 65535)),
])
def test_origin_is_scheme_host_and_explicit_port(url, origin):
    assert parse_origin(url) == origin


@pytest.mark.parametrize("url, words", [
    ("http://user:pass@127.0.0.1:8080/v1", ("user:pass@",)),
    ("http://key@127.0.0.1:8080/v1", ("user:pass@",)),
    ("http://127.0.0.1:8080/v1?x=", ("query string",)),
    ("http://10.0.0.5:9200/_cat/indices?x=", ("query string",)),
    ("http://127.0.0.1:8080/v1#frag", ("fragment",)),
    ("http://127.0.0.1:8080/v1?", ("query string",)),
    ("ftp://127.0.0.1/v1", ("not an http(s) url",)),
    ("file:///etc/passwd", ("not an http(s) url",)),
    ("127.0.0.1:8080", ("not an http(s) url",)),
    ("http://127.0.0.1:0/v1", ("invalid port",)),
    ("http://127.0.0.1:65536/v1", ("invalid port",)),
    ("http://127.0.0.1:80x/v1", ("invalid port",)),
    ("http://127.0.0.1:/v1", ("invalid port",)),
    ("http://127.0.0.1:9/v1\x00evil", ("control character",)),
    ("http://127.0.0.1:9/v 1", ("space",)),
    ("http://127.0.0.1\\@evil.example/v1", ("backslash",)),
    ("http://[fe80::1%25eth0]:80/v1", ("zone",)),
    ("http://::1:8080/v1", ("brackets",)),
])
def test_malformed_base_url_is_refused_naming_what_is_wrong(url, words, env):
    with pytest.raises(ServerPolicyError) as e:
        check(url, ServerList(env_text=""))
    for w in words:
        assert w in str(e.value).lower(), str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("host, loop", [
    ("127.0.0.1", True), ("127.5.6.7", True), ("127.255.255.254", True), ("localhost", True), ("LOCALHOST", True),
    ("::1", True), ("[::1]", True),
    ("128.0.0.1", False), ("0.0.0.0", False), ("::", False), ("::ffff:192.0.2.1", False), (DOC_IP, False),
    ("127.0.0.1.nip.io", False), ("localhost.example.org", False), ("2130706433", False), ("127.1", False),
    ("0x7f000001", False), ("", False),
])
def test_loopback_is_decided_from_the_text_alone(host, loop):
    assert is_loopback(host) is loop


def test_server_list_parsing(env):
    s = ServerList(env_text=" http://192.168.1.20:11434 , https://llm.example.org,,\nhttp://[::1]:9000/v1 ",
                   settings_text="http://127.0.0.1:8080, nonsense, http://u:p@10.0.0.1")
    assert s.origins == {("http", "192.168.1.20", 11434), ("https", "llm.example.org", 443), ("http", "::1", 9000),
                         ("http", "127.0.0.1", 8080)}
    assert len(s.problems) == 2 and "nonsense" in s.problems[0] and "user:pass@" in s.problems[1], s.problems
    assert "LLM servers" in s.problems[0]  # names where the bad entry is
    env.setenv("LEAN_LLM_SERVERS", "http://10.1.2.3:8000")
    assert ServerList().origins == {("http", "10.1.2.3", 8000)}
    assert not ServerList(env_text="", settings_text="")
    too_long = ServerList(env_text="http://a.example," * 1000)
    assert not too_long and "longer than" in too_long.problems[0]


# ------------------------------------------------------------------------------------------ the decision

def test_listed_origin_gets_the_key_loopback_does_not_others_are_refused(env):
    listed = ServerList(env_text="http://192.168.1.20:11434,http://127.0.0.1:8080")
    d = check("http://192.168.1.20:11434/v1", listed, key_set=True)
    assert d.send_key and d.listed and not d.notice and d.url == "http://192.168.1.20:11434/v1"
    d = check("http://127.0.0.1:8080", listed, key_set=True)
    assert d.send_key and d.url == "http://127.0.0.1:8080/v1"
    # another port of a listed host is another origin
    d = check("http://127.0.0.1:8081/v1", listed, key_set=True)
    assert not d.send_key and "was not sent to http://127.0.0.1:8081" in d.notice
    for other in ("https://192.168.1.20:11434/v1", "http://192.168.1.20:11435/v1", f"http://{DOC_IP}/v1",
                  "http://llm.example.org/v1", "http://[2001:db8::1]:8080/v1"):
        with pytest.raises(ServerPolicyError) as e:
            check(other, listed, key_set=True)
        msg = str(e.value)
        assert "not one you listed" in msg and "LEAN_LLM_SERVERS" in msg and "Settings > Lean > LLM servers" in msg
        assert llm_servers.format_origin(parse_origin(other)) in msg, msg  # names the origin to add
    # no key set: no notice
    assert check("http://localhost:9/v1", listed, key_set=False).notice == ""


def test_key_without_any_list_is_a_one_line_message_not_silence(env):
    d = check("http://localhost:8080/v1", ServerList(env_text=""), key_set=True)
    assert not d.send_key
    assert "LEAN_LLM_API_KEY is set but no LLM server is listed" in d.notice and "\n" not in d.notice
    assert "http://localhost:8080" in d.notice


# ------------------------------------------------------------------------------------------ what servers receive

def test_key_reaches_a_listed_server_and_never_an_unlisted_loopback_one(servers, env):
    a, b = servers(), servers()
    env.setenv("LEAN_LLM_API_KEY", KEY)
    env.setenv("LEAN_LLM_SERVERS", a.url)
    cache = llm.ModelCache()
    try:
        ra = llm.write_prompt(llm.load("openai", base_url=a.url + "/v1", cache=cache), "a fox", max_tokens=4)
        rb = llm.write_prompt(llm.load("openai", base_url=b.url + "/v1", cache=cache), "a fox", max_tokens=4)
    finally:
        cache.free()
    assert a.seen and all(auth == f"Bearer {KEY}" for _, _, auth in a.seen), a.seen
    assert b.seen and all(auth is None for _, _, auth in b.seen), b.seen
    assert ra.prompt == rb.prompt == "red fox"
    assert "Note:" not in ra.message(4)
    msg = rb.message(4)
    assert f"LEAN_LLM_API_KEY was not sent to http://127.0.0.1:{b.port}" in msg and "LEAN_LLM_SERVERS" in msg, msg


def test_unlisted_loopback_server_that_wants_the_key_says_why(servers, env):
    b = servers(status=401)
    env.setenv("LEAN_LLM_API_KEY", KEY)
    m = llm_backends.OpenAIModel(b.url + "/v1", connect_check=False, servers=ServerList(env_text=""))
    with pytest.raises(RuntimeError, match="answered 401") as e:
        m.generate([{"role": "user", "content": "x"}], max_tokens=2)
    assert "no LLM server is listed" in str(e.value) and KEY not in str(e.value)


def test_settings_list_counts_like_the_environment(servers, env):
    a = servers()
    env.setenv("LEAN_LLM_API_KEY", KEY)
    s = ServerList(env_text="", settings_text=f"{a.url}")
    llm_backends.OpenAIModel(a.url + "/v1", servers=s)
    assert a.seen and a.seen[0][2] == f"Bearer {KEY}"


def test_changing_the_list_changes_the_cache_key(env):
    k1 = llm.model_key("openai", base_url="http://127.0.0.1:9/v1", servers=ServerList(env_text=""))
    k2 = llm.model_key("openai", base_url="http://127.0.0.1:9/v1", servers=ServerList(env_text="http://127.0.0.1:9"))
    env.setenv("LEAN_LLM_API_KEY", KEY)
    k3 = llm.model_key("openai", base_url="http://127.0.0.1:9/v1", servers=ServerList(env_text="http://127.0.0.1:9"))
    assert k1 == k2 != k3  # the key is only sent (k3) when it is set and the origin listed


def test_unlisted_remote_origin_is_refused_before_any_socket_or_name_lookup(env):
    env.setenv("LEAN_LLM_API_KEY", KEY)
    cache = llm.ModelCache()
    with socket_audit.refuse_non_loopback() as guard:
        for url in (f"http://{DOC_IP}:9/v1", "http://llm.invalid/v1", f"http://{DOC_IP}:9"):
            with pytest.raises(ServerPolicyError, match="not one you listed"):
                llm.load("openai", base_url=url, cache=cache)
            with pytest.raises(ServerPolicyError):
                llm_backends.OpenAIModel(url, connect_check=True)
        assert guard.events == [], guard.events  # no connect, no getaddrinfo at all
    assert len(cache) == 0


def test_the_guard_itself_refuses_a_listed_documentation_address(env):
    """Listed, so the policy lets it through: the hook refuses the connect, so no packet leaves (and the node
    reports 'cannot reach')."""
    with socket_audit.refuse_non_loopback() as guard:
        with pytest.raises(ConnectionError, match=f"cannot reach .*{DOC_IP}"):
            llm_backends.OpenAIModel(f"http://{DOC_IP}:9/v1", servers=ServerList(env_text=f"http://{DOC_IP}:9"))
        with pytest.raises(ConnectionError, match=f"cannot reach .*{DOC_IP}"):
            m = llm_backends.OpenAIModel(f"http://{DOC_IP}:9/v1", connect_check=False,
                                         servers=ServerList(env_text=f"http://{DOC_IP}:9"))
            m.generate([{"role": "user", "content": "x"}], max_tokens=1)
        assert guard.refused and all(DOC_IP in str(a) for _, a in guard.refused), guard.refused


# ------------------------------------------------------------------------------------------ the host's settings file

def _host_module(monkeypatch, user_dir):
    """nodes/_host.py with a stand-in folder_paths whose user directory is `user_dir`."""
    fp = types.ModuleType("folder_paths")
    fp.get_user_directory = lambda: str(user_dir)
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    import importlib
    return importlib.import_module("lean_nodes.nodes._host")


def test_settings_file_absent_corrupt_and_present(tmp_path, monkeypatch):
    host = _host_module(monkeypatch, tmp_path)
    f = tmp_path / "default" / "comfy.settings.json"
    assert host.user_settings_file() == str(f)
    assert host.read_user_setting("Lean.LLM.Servers") == (None, "")  # absent
    f.parent.mkdir()
    f.write_text('{"Lean.LLM.Servers": "http://192.168.1.20:11434", "Comfy.Locale": "en"}')
    assert host.read_user_setting("Lean.LLM.Servers") == ("http://192.168.1.20:11434", "")
    for bad, words in (('{"Lean.LLM.Servers": ', "could not be read"), ("[1, 2]", "not a JSON object"),
                       (b"\xff\xfe{}", "could not be read")):
        f.write_bytes(bad if isinstance(bad, bytes) else bad.encode())
        value, problem = host.read_user_setting("Lean.LLM.Servers")
        assert value is None and words in problem and "Lean.LLM.Servers" in problem, problem
        assert str(tmp_path) not in problem  # no absolute path in a message
    f.write_bytes(b" " * (host.MAX_SETTINGS_BYTES + 1))
    value, problem = host.read_user_setting("Lean.LLM.Servers")
    assert value is None and "larger than" in problem
    # the problem travels into the policy's refusal text
    s = ServerList(env_text="", settings_text="", settings_problem=problem)
    with pytest.raises(ServerPolicyError, match="larger than"):
        check("http://10.9.8.7/v1", s)


def test_multi_user_host_reads_the_default_user(tmp_path, monkeypatch):
    host = _host_module(monkeypatch, tmp_path)
    sys.modules["folder_paths"].get_public_user_directory = lambda user: str(tmp_path / "pub" / user)
    assert host.user_settings_file() == str(tmp_path / "pub" / "default" / "comfy.settings.json")
