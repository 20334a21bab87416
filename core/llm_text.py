"""Prompt building and reasoning (``<think>``) parsing for the LLM prompt writer.  Pure logic."""
import re

STYLE_PRESETS = {
    "SD1.5 tags": (
        "You write prompts for Stable Diffusion 1.5. Reply with the prompt only: one line of comma-separated "
        "tags, most important first (subject, details, setting, lighting, style), ending with quality tags "
        "such as masterpiece, best quality. At most 60 words. No sentences, no explanations, no quotes."),
    "SDXL": (
        "You write prompts for Stable Diffusion XL. Reply with the prompt only: one short descriptive "
        "sentence about the subject, followed by comma-separated tags for setting, lighting, camera and style. "
        "At most 70 words. No explanations, no quotes."),
    "Flux / prose": (
        "You write prompts for Flux and other natural-language image models (SD3, HiDream). Reply with the "
        "prompt only: one vivid paragraph of plain prose, two to four sentences, describing the subject, "
        "composition, lighting, colours and style. No lists, no tags, no explanations, no quotes."),
    "custom": None,  # the node's system_prompt
    # image styles (the node's 'image' input): describe what the picture shows as a prompt that reproduces it
    "describe for SD1.5": (
        "You look at an image and write a Stable Diffusion 1.5 prompt that reproduces it. Reply with the prompt "
        "only: one line of comma-separated tags, most important first (subject, details, setting, lighting, "
        "colours, style, medium), ending with quality tags such as masterpiece, best quality. At most 60 words. "
        "No sentences, no explanations, no quotes."),
    "describe for SDXL": (
        "You look at an image and write a Stable Diffusion XL prompt that reproduces it. Reply with the prompt "
        "only: one short sentence about the subject, followed by comma-separated tags for setting, lighting, "
        "camera, colours and style. At most 70 words. No explanations, no quotes."),
    "describe for Flux": (
        "You look at an image and write a prompt for Flux that reproduces it. Reply with the prompt only: one "
        "paragraph of plain prose, three to five sentences, describing the subject, composition, lighting, "
        "colours, style and any visible text exactly. No lists, no tags, no explanations, no quotes."),
    "describe for Z-Image": (
        "You look at an image and write a prompt for Z-Image that reproduces it. Reply with the prompt only: one "
        "detailed paragraph of natural language, describing the subject, their appearance and pose, the setting, "
        "composition, camera angle, lighting, colours, style and any visible text in quotes. No lists, no "
        "explanations."),
    "caption (training data, one line)": (
        "You write captions for an image training data set. Reply with one plain sentence describing what the "
        "image shows: subject, appearance, action, setting, style. Do not start with 'The image' or 'This is'. "
        "One line, no quotes, no explanations."),
    "tags": (
        "You tag images. Reply with comma-separated lowercase tags of what is visible in the image (subject, "
        "attributes, clothing, objects, setting, lighting, style), most important first, at most 40 tags. Tags "
        "only, no sentences, no explanations."),
}
STYLES = list(STYLE_PRESETS)
IMAGE_STYLES = [s for s in STYLES if s.startswith(("describe for", "caption", "tags"))]
DESCRIBE = "Describe this image."
STEER = "Describe this image, changed as follows: {idea}"

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

CHATML_FALLBACK = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_messages(idea, style, system_prompt="", image=False):
    """OpenAI-style messages for one request (text only: a backend puts the image into the user turn itself).
    With ``image``: no idea -> DESCRIBE; an idea with an image style -> STEER (the idea steers the description);
    an idea with a text style -> the idea as it is.  Raises ValueError naming the bad input."""
    idea = (idea or "").strip()
    if image:
        if not idea:
            idea = DESCRIBE
        elif style in IMAGE_STYLES:
            idea = STEER.format(idea=idea)
    elif style in IMAGE_STYLES:
        raise ValueError(f"LLM Prompt Writer: style '{style}' describes an image, but no image is connected: "
                         f"connect a Load Image node to 'image', or pick a text style (SD1.5 tags, SDXL, Flux)")
    if not idea:
        raise ValueError("LLM Prompt Writer: 'idea' is empty: type what the image should show")
    if style not in STYLE_PRESETS:
        raise ValueError(f"LLM Prompt Writer: unknown style {style!r}; choose one of {', '.join(STYLES)}")
    system = STYLE_PRESETS[style]
    if system is None:
        system = (system_prompt or "").strip()
        if not system:
            raise ValueError("LLM Prompt Writer: style is 'custom' but 'system_prompt' is empty: write the "
                             "instructions for the model there, or pick a preset style")
    return [{"role": "system", "content": system}, {"role": "user", "content": idea}]


def _raise(msg):
    raise ValueError(msg)


def render_chat(template, messages, bos_token="", eos_token=""):
    """Render `messages` with a GGUF/HF Jinja chat template (ChatML when `template` is empty), within the budgets
    of ``llm_template`` (a template comes with a stranger's model file).  Raises ``ChatTemplateError`` (a
    ValueError) naming what is wrong.  A template that refuses the system role (Gemma, Mistral v1) gets it folded
    into the first user turn."""
    from .llm_template import ChatTemplateLimit, render
    source = template or CHATML_FALLBACK

    def go(msgs):
        return render(source, messages=msgs, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token,
                      _globals={"strftime_now": lambda *a, **k: ""})  # no clock in a reproducible prompt

    try:
        return go(messages)
    except ChatTemplateLimit:
        raise
    except ValueError:
        if len(messages) < 2 or messages[0]["role"] != "system":
            raise
        folded = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
        return go(folded + list(messages[2:]))


def opens_think(rendered_prompt):
    """True when the chat template's generation prompt already opened a reasoning block (R1 style)."""
    return rendered_prompt.rstrip().endswith(THINK_OPEN)


class ThinkSplit:
    """prompt: the text for the image model; thinking: the reasoning; truncated: the model stopped inside
    an unclosed reasoning block (then prompt is empty, never the reasoning)."""
    __slots__ = ("prompt", "thinking", "truncated")

    def __init__(self, prompt, thinking, truncated):
        self.prompt, self.thinking, self.truncated = prompt, thinking, truncated

    def __iter__(self):
        return iter((self.prompt, self.thinking, self.truncated))

    def __repr__(self):
        return f"ThinkSplit(prompt={self.prompt!r}, thinking={self.thinking!r}, truncated={self.truncated})"


def split_thinking(text, opened=False, reasoning=""):
    """Separate reasoning from the answer.

    text: what the model generated.  opened: the prompt ended with <think> (R1 templates), so `text`
    starts inside the reasoning.  reasoning: reasoning a server already returned separately
    (``reasoning_content``).  Handles both tags, a missing opening tag (everything before the first
    </think> is reasoning), several blocks, and truncation mid-thought."""
    text = text or ""
    if opened and not text.lstrip().startswith(THINK_OPEN):
        text = THINK_OPEN + text
    thoughts = [reasoning.strip()] if reasoning and reasoning.strip() else []
    answer = []
    truncated = False
    first_close = text.find(THINK_CLOSE)
    first_open = text.find(THINK_OPEN)
    if first_close != -1 and (first_open == -1 or first_close < first_open):
        # opening tag missing (template opened it, server did not echo it)
        thoughts.append(text[:first_close].strip())
        text = text[first_close + len(THINK_CLOSE):]
    pos = 0
    while True:
        start = text.find(THINK_OPEN, pos)
        if start == -1:
            answer.append(text[pos:])
            break
        answer.append(text[pos:start])
        end = text.find(THINK_CLOSE, start + len(THINK_OPEN))
        if end == -1:
            thoughts.append(text[start + len(THINK_OPEN):].strip())
            truncated = True
            break
        thoughts.append(text[start + len(THINK_OPEN):end].strip())
        pos = end + len(THINK_CLOSE)
    prompt = "" if truncated else clean_prompt("".join(answer).replace(THINK_CLOSE, ""))
    return ThinkSplit(prompt, "\n\n".join(t for t in thoughts if t), truncated)


# A leading label such as "**Final prompt:**", read piece by piece: each regex is one word or one greedy
# character class, so nothing can backtrack (the single regex `prompt\s*(?:\*\*)?\s*:` was quadratic on the
# whitespace after "prompt" when no colon followed).
_LABEL_WS = re.compile(r"\s*")
_LABEL_WS1 = re.compile(r"\s+")
_LABEL_FINAL = re.compile(r"final", re.IGNORECASE)
_LABEL_PROMPT = re.compile(r"prompt", re.IGNORECASE)


def _label_end(t):
    """Where a leading '[**][final ]prompt[**]:[**]' label (and the whitespace around it) ends, or 0."""
    i = _LABEL_WS.match(t).end()
    if t.startswith("**", i):
        i += 2
    m = _LABEL_FINAL.match(t, i)
    if m:
        ws = _LABEL_WS1.match(t, m.end())
        if ws:
            i = ws.end()
    m = _LABEL_PROMPT.match(t, i)
    if not m:
        return 0
    i = _LABEL_WS.match(t, m.end()).end()
    if t.startswith("**", i):
        i = _LABEL_WS.match(t, i + 2).end()
    if not t.startswith(":", i):
        return 0
    i = _LABEL_WS.match(t, i + 1).end()
    if t.startswith("**", i):
        i += 2
    return _LABEL_WS.match(t, i).end()


_QUOTES = ('"', "'", "`", "\u201c", "\u201d")


def clean_prompt(text):
    """Trim what chat models wrap around an answer: whitespace, a 'Prompt:' label, surrounding quotes or
    code fences."""
    t = (text or "").strip()
    if t.startswith("```") and t.endswith("```") and len(t) >= 6:
        t = t[3:-3]
        t = t.split("\n", 1)[1] if "\n" in t and not t.split("\n", 1)[0].strip(" ,.").count(" ") else t
        t = t.strip()
    t = t[_label_end(t):].strip()
    if len(t) >= 2 and t[0] in _QUOTES and t[-1] in _QUOTES:
        t = t[1:-1].strip()
    return t
