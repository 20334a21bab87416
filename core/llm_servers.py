"""Where the openai backend may connect, and where LEAN_LLM_API_KEY may go: decided by the user, never by a workflow.

A workflow (a stranger's JSON or PNG) sets ``base_url``; so ``base_url`` alone must not be able to send the API key,
or anything else, to a machine the user did not name.  The user names their servers outside any workflow:

- the environment variable ``LEAN_LLM_SERVERS`` (comma-separated origins, e.g.
  ``http://192.168.1.20:11434,https://llm.example.org``), and/or
- the same list in ComfyUI's Settings dialog (Lean > LLM servers), which the node adapter reads from the host's
  stored user settings and passes in as ``extra``.

Rules (``check``):
- ``base_url`` must be a plain http(s) URL: no ``user:pass@``, query string or fragment.
- Its origin (scheme, host, port) in the list: allowed, and the key is sent there.
- Not listed but on loopback (127.0.0.0/8, ::1, ``localhost``): allowed, without the key.
- Anything else: refused before any connection (no DNS lookup either), naming the origin and how to allow it.

Pure logic: no network, no host imports.  ``parse_origin`` never resolves a name.
"""
import ipaddress
import os
import urllib.parse

ENV_SERVERS = "LEAN_LLM_SERVERS"
ENV_KEY = "LEAN_LLM_API_KEY"
SETTING_ID = "Lean.LLM.Servers"
SETTING_WHERE = "ComfyUI Settings > Lean > LLM servers"
LOOPBACK_NAMES = ("localhost",)
MAX_LIST_CHARS = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}


class ServerPolicyError(ValueError):
    """base_url is malformed or names a server the user did not list; nothing was contacted."""


def _host_for_url(host):
    return f"[{host}]" if ":" in host else host


def format_origin(origin):
    scheme, host, port = origin
    return f"{scheme}://{_host_for_url(host)}:{port}"


def _split(url, what):
    text = (url or "").strip()
    if any(ord(c) < 33 or ord(c) == 127 for c in text):
        raise ServerPolicyError(f"{what} {url!r} contains a space or control character (NUL, newline, ...): type "
                                f"the server's address again, e.g. http://127.0.0.1:8080/v1")
    if "\\" in text:
        raise ServerPolicyError(f"{what} {url!r} contains a backslash: use forward slashes, e.g. "
                                f"http://127.0.0.1:8080/v1")
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.netloc:
        raise ServerPolicyError(f"{what} {url!r} is not an http(s) URL: use the server's OpenAI address, e.g. "
                                f"http://127.0.0.1:8080/v1 (llama.cpp server), http://127.0.0.1:1234/v1 (LM Studio), "
                                f"http://127.0.0.1:11434/v1 (Ollama)")
    if "@" in parts.netloc:
        raise ServerPolicyError(f"{what} {url!r} contains a user name or password (user:pass@): refused, Lean never "
                                f"sends credentials written in an address; set the key in the environment variable "
                                f"{ENV_KEY} and name the server in {ENV_SERVERS} or {SETTING_WHERE}")
    if "?" in text or "#" in text:
        raise ServerPolicyError(f"{what} {url!r} has a query string or fragment ('?' or '#'): refused; give only "
                                f"scheme, host, port and path, e.g. http://127.0.0.1:8080/v1")
    host = (parts.hostname or "").lower()
    if not host:
        raise ServerPolicyError(f"{what} {url!r} has no host name: e.g. http://127.0.0.1:8080/v1 (an IPv6 "
                                f"address goes in brackets: http://[::1]:8080/v1)")
    if parts.netloc.startswith("[") != (":" in host):
        raise ServerPolicyError(f"{what} {url!r}: an IPv6 address must be in brackets, e.g. http://[::1]:8080/v1")
    if "%" in host:
        raise ServerPolicyError(f"{what} {url!r}: an IPv6 zone (%) is not supported; use the address without it")
    try:
        port = parts.port
    except ValueError:
        raise ServerPolicyError(f"{what} {url!r} has an invalid port: a number from 1 to 65535, e.g. :8080") from None
    if port == 0 or (port is None and parts.netloc.rstrip("]").endswith(":")):
        raise ServerPolicyError(f"{what} {url!r} has an invalid port: a number from 1 to 65535, e.g. :8080")
    return scheme, host, port or DEFAULT_PORTS[scheme], parts.path


def parse_origin(url, what="base_url"):
    """(scheme, host, port) of ``url``, the port explicit, the host lower-case; ServerPolicyError if malformed."""
    scheme, host, port, _ = _split(url, what)
    return scheme, host, port


def is_loopback(host):
    """True for 127.0.0.0/8, ::1 and the name ``localhost``, decided from the text alone (never resolved)."""
    h = (host or "").strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def canonical_url(url):
    """``scheme://host:port/path`` rebuilt from the checked parts (what is really connected to), with ``/v1``
    added when the path is empty.  Raises ServerPolicyError for what ``parse_origin`` refuses."""
    scheme, host, port, path = _split(url, "base_url")
    path = path.rstrip("/")
    if not path:
        path = "/v1"
    return f"{scheme}://{_host_for_url(host)}:{port}{path}"


def parse_servers(text, source):
    """[(origin, entry)] of a comma- (or newline-) separated list.  Returns (origins, problems): a bad entry is
    skipped and described in ``problems`` (it allows nothing)."""
    text = text if isinstance(text, str) else ""
    origins, problems = [], []
    if len(text) > MAX_LIST_CHARS:
        return [], [f"{source} is longer than {MAX_LIST_CHARS} characters: ignored"]
    for entry in text.replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            scheme, host, port, path = _split(entry, f"{source} entry")
        except ServerPolicyError as e:
            problems.append(str(e))
            continue
        origins.append(((scheme, host, port), entry))
    return origins, problems


class ServerList:
    """The user's servers: ``LEAN_LLM_SERVERS`` plus ``extra`` (the Settings entry's text, from the host)."""

    def __init__(self, env_text=None, settings_text="", settings_problem=""):
        env_text = os.environ.get(ENV_SERVERS, "") if env_text is None else env_text
        a, pa = parse_servers(env_text, ENV_SERVERS)
        b, pb = parse_servers(settings_text, SETTING_WHERE)
        self.entries = a + b
        self.origins = {o for o, _ in self.entries}
        self.problems = pa + pb + ([settings_problem] if settings_problem else [])

    def __contains__(self, origin):
        return origin in self.origins

    def __bool__(self):
        return bool(self.origins)

    def fingerprint(self):
        return tuple(sorted(format_origin(o) for o in self.origins))


class Decision:
    """What ``check`` allows for one base_url: ``url`` (canonical, what is connected to), ``origin``,
    ``send_key`` and ``notice`` (one line for the node's status when the key is withheld, else "")."""
    __slots__ = ("url", "origin", "send_key", "notice", "listed")

    def __init__(self, url, origin, send_key, notice, listed):
        self.url, self.origin, self.send_key, self.notice, self.listed = url, origin, send_key, notice, listed

    def key(self):
        return (self.url, self.send_key)


def how_to_allow(origin_text):
    return (f"to allow it, add {origin_text} to the environment variable {ENV_SERVERS} (comma-separated, then "
            f"restart ComfyUI) or to {SETTING_WHERE}")


def check(base_url, servers=None, key_set=None):
    """Decide for ``base_url`` (ServerPolicyError when refused).  ``servers``: a ServerList (default: the
    environment's); ``key_set``: whether LEAN_LLM_API_KEY is set (default: read the environment)."""
    servers = ServerList() if servers is None else servers
    key_set = bool(os.environ.get(ENV_KEY)) if key_set is None else bool(key_set)
    url = canonical_url(base_url)
    origin = parse_origin(url)
    text = format_origin(origin)
    listed = origin in servers
    extra = (" (ignored entries: " + "; ".join(servers.problems) + ")") if servers.problems else ""
    if not listed and not is_loopback(origin[1]):
        raise ServerPolicyError(
            f"base_url {base_url.strip()!r}: the server {text} is not one you listed, so Lean does not contact it "
            f"(a shared workflow chooses base_url; only you choose the servers). If it is yours, "
            f"{how_to_allow(text)}{extra}")
    notice = ""
    if key_set and not listed:
        if not servers:
            notice = (f"{ENV_KEY} is set but no LLM server is listed, so the key was not sent to {text}: the key now "
                      f"only goes to servers you name; {how_to_allow(text)}{extra}")
        else:
            notice = (f"{ENV_KEY} was not sent to {text}: it is not one of your listed servers "
                      f"({', '.join(servers.fingerprint())}); {how_to_allow(text)}{extra}")
    return Decision(url, origin, key_set and listed, notice, listed)
