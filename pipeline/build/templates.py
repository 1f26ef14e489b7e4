"""Render an `Example` through a chat template into ordered `Segment`s.

The segments join to the exact training string, and each says whether its characters are
trained on. Two ways to find the trainable characters, both ending in the same `Rendered`:

1. The template marks them with `{% generation %}...{% endgeneration %}` (every bundled template
   does). We render once with our own `generation` tag that wraps the block in two Unicode
   noncharacters, then cut the string at those marks:

       "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" | "Hello<|im_end|>" | "\n"
        trainable=False                                            trainable=True     False

2. The template has no markers (most chat templates shipped with tokenizers). We render growing
   prefixes of the conversation: the assistant turn i is what `messages[:i+1]` adds to
   `messages[:i]` rendered with `add_generation_prompt=True`; whitespace after a closing special
   token (ChatML's "\n") is left out. A template whose renderings are not prefixes of each other
   cannot be read this way and the record is rejected with that reason.

Text a user typed that spells a special token can be kept as plain text (`protect`): each such
occurrence is broken with a third noncharacter before rendering, so the template cannot confuse
it with its own control tokens, and is reported back as a `plain_spans` range of the final text.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from masked_shards import bundled_templates
from masked_shards.build.template_probes import PROBES
from masked_shards.records import Example, Segment

GEN_OPEN, GEN_CLOSE, PLAIN_MARK = "\ufdd0", "\ufdd1", "\ufdd2"
TOKENIZER_TEMPLATE = "tokenizer"
AUTO_TEMPLATE = "auto"
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


class TemplateError(Exception):
    """A template that cannot be used (config time) or cannot render one record (reject)."""


@dataclass(frozen=True)
class ChatTemplate:
    """A named Jinja chat template; `source` is its full text, as recorded in the manifest."""

    name: str
    source: str
    matched_sha256: str | None = None
    """With `--template auto`: the sha256 of the tokenizer's own template this one was chosen for."""

    @property
    def has_generation_marks(self) -> bool:
        return bool(_GENERATION_TAG.search(self.source))


@dataclass(frozen=True)
class Rendered:
    """The exact training string, its segments, and the ranges to tokenize as plain text."""

    text: str
    segments: tuple[Segment, ...]
    plain_spans: tuple[tuple[int, int], ...] = ()

    def assistant_spans(self) -> list[tuple[int, int, bool]]:
        """(start, end, trainable) of every assistant turn's span, in order; a turn marked
        `train: false` is listed too, so `--train-on last` can tell the final turn from the
        last trainable one."""
        spans, start = [], 0
        for segment in self.segments:
            end = start + len(segment.text)
            if segment.turn is not None:
                spans.append((start, end, segment.trainable))
            start = end
        return spans


def resolve_template(spec: str, tokenizer_template: str | dict[str, str] | None, bos_token: str | None = None, eos_token: str | None = None) -> ChatTemplate:
    """A bundled name, `tokenizer` (the tokenizer's own template), `auto` (the bundled template that
    renders like the tokenizer's own, else that one, `chatml` when it has none; BOS and EOS are the
    tokenizer's), or a path to a `.jinja` file."""
    available = bundled_templates.bundled()
    if spec in available:
        return ChatTemplate(spec, bundled_templates.template_path(spec).read_text(encoding="utf-8"))
    if spec in (TOKENIZER_TEMPLATE, AUTO_TEMPLATE):
        if isinstance(tokenizer_template, dict):
            tokenizer_template = tokenizer_template.get("default")
        if spec == AUTO_TEMPLATE:
            # Without a template of its own (a translation or base tokenizer) there is nothing to
            # match: generic ChatML, as before auto, and the start-up line says why.
            if not tokenizer_template:
                return ChatTemplate("chatml", bundled_templates.template_path("chatml").read_text(encoding="utf-8"))
            return match_bundled(tokenizer_template, {"bos_token": bos_token or "", "eos_token": eos_token or ""})
        if not tokenizer_template:
            raise TemplateError("--template tokenizer was given but the tokenizer has no chat template")
        return ChatTemplate(TOKENIZER_TEMPLATE, tokenizer_template)
    if spec.endswith(".jinja"):
        try:
            with open(spec, encoding="utf-8") as handle:
                return ChatTemplate(spec, handle.read())
        except OSError as err:
            raise TemplateError(f"cannot read template file {spec} ({err.strerror})") from None
    names = ", ".join([*available, AUTO_TEMPLATE, TOKENIZER_TEMPLATE])
    raise TemplateError(f"unknown template {spec!r}; choose one of {names}, or a path to a .jinja file")


def match_bundled(original: str, variables: dict[str, str]) -> ChatTemplate:
    """The first bundled chat template that renders every probe (template_probes.py) exactly as
    `original` does, on the probes `original` can render at all; `original` itself (as the
    `tokenizer` template) when none does or it renders none. Bundled templates render with
    `as_published=true`, which leaves out a training fix (a stop token the original never writes).
    Either way `matched_sha256` records which original the choice was made for."""
    digest = hashlib.sha256(original.encode("utf-8")).hexdigest()
    compiled = _compile(original)
    expected = {name: text for name in PROBES if (text := _render_probe(compiled, name, variables)) is not None}
    if expected:
        for name in bundled_templates.bundled():
            source = bundled_templates.template_path(name).read_text(encoding="utf-8")
            compiled = _compile(source)
            if all(_render_probe(compiled, probe, {**variables, "as_published": True}) == text for probe, text in expected.items()):
                return ChatTemplate(name, source, digest)
    return ChatTemplate(TOKENIZER_TEMPLATE, original, digest)


def _render_probe(template: jinja2.Template, probe: str, variables: dict[str, object]) -> str | None:
    """One probe rendered as `apply_chat_template` would (generation marks dropped), or None when
    the template refuses it or fails on it: a template may fail in any way on a conversation it
    cannot express (a tool call, a system message), which only means that probe tells nothing."""
    messages, tools = PROBES[probe]
    try:
        text = template.render(messages=messages, tools=tools, add_generation_prompt=False, **variables)
    except Exception:  # noqa: BLE001 - see the docstring
        return None
    return text.replace(GEN_OPEN, "").replace(GEN_CLOSE, "")


def renders_tools_and_reasoning(source: str, variables: dict[str, str]) -> tuple[bool, bool]:
    """Whether a template writes a tool call (the `call_only` probe's arguments appear) and the
    reasoning of the final assistant turn (the `reasoning` probe's last thought appears)."""
    compiled = _compile(source)
    call = _render_probe(compiled, "call_only", variables) or ""
    reasoning = _render_probe(compiled, "reasoning", variables) or ""
    last_thought = PROBES["reasoning"][0][-1]["reasoning_content"]
    return "America/Lima" in call, str(last_thought) in reasoning


class _GenerationMarks(Extension):
    """`{% generation %}` that wraps its body in GEN_OPEN/GEN_CLOSE instead of tracking indices."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

    def _mark(self, caller: jinja2.runtime.Macro) -> str:
        return GEN_OPEN + caller() + GEN_CLOSE


def _tojson(value: object, indent: int | None = None, ensure_ascii: bool = False, separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Hugging Face's tojson: no HTML escaping, unlike Jinja's own filter.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _compile(source: str) -> jinja2.Template:
    """Compile with the same environment settings Hugging Face uses for chat templates, so a
    template renders here exactly as `apply_chat_template` renders it."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationMarks, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"template does not compile: {err.message} (line {err.lineno})") from None
    # Jinja keeps a template's globals as a ChainMap over the environment's and copies it, key by
    # key in Python, at every render (a third of a ChatML render). Nothing changes them after
    # this point, so one flat dict serves and renders the same text.
    template.globals = dict(template.globals)
    return template


class Renderer:
    """Renders examples through one template; compile once, render many (one per worker)."""

    def __init__(self, template: ChatTemplate, *, bos_token: str | None, eos_token: str | None, special_tokens: tuple[str, ...]) -> None:
        self.template = template
        self._jinja = _compile(template.source)
        self._marked = template.has_generation_marks
        self._variables = {"bos_token": bos_token or "", "eos_token": eos_token or ""}
        self._special_tokens = tuple(sorted(special_tokens, key=len, reverse=True))

    def render(self, example: Example, protect: tuple[str, ...] = ()) -> Rendered:
        """Render one example; raises TemplateError when the template refuses or cannot be read."""
        messages = [{key: value if key == "role" else _break_all(value, protect) for key, value in t.message().items()} for t in example.turns]
        tools = _break_all(example.tools, protect)
        assistant_turns = [n for n, t in enumerate(example.turns) if t.role == "assistant"]
        if self._marked:
            text, spans = self._render_marked(messages, tools)
        else:
            text, spans = self._render_by_prefixes(messages, assistant_turns, tools)
        if len(spans) != len(assistant_turns):
            raise TemplateError(f"template marked {len(spans)} assistant spans for {len(assistant_turns)} assistant turns")
        return _finish(text, spans, [(n, example.turns[n].trainable) for n in assistant_turns], protect)

    def generation_prompt(self, example: Example) -> str:
        """The text a model is given to write the next assistant turn after `example`'s messages
        (`add_generation_prompt=True`), without generation marks."""
        text = self._run([t.message() for t in example.turns], add_generation_prompt=True, tools=example.tools)
        return text.replace(GEN_OPEN, "").replace(GEN_CLOSE, "")

    def _run(self, messages: list[dict[str, object]], add_generation_prompt: bool, tools: list[dict[str, object]] | None = None) -> str:
        try:
            return self._jinja.render(messages=messages, add_generation_prompt=add_generation_prompt, tools=tools, **self._variables)
        except TemplateError:
            raise
        except jinja2.TemplateError as err:
            raise TemplateError(f"template failed: {err}") from None

    def _render_marked(self, messages: list[dict[str, object]], tools: list[dict[str, object]] | None) -> tuple[str, list[tuple[int, int]]]:
        marked = self._run(messages, add_generation_prompt=False, tools=tools)
        text_parts, spans, position = [], [], 0
        for n, part in enumerate(re.split(f"([{GEN_OPEN}{GEN_CLOSE}])", marked)):
            if part == GEN_OPEN:
                spans.append([position, None])
            elif part == GEN_CLOSE:
                if not spans or spans[-1][1] is not None:
                    raise TemplateError("unbalanced generation marks")
                spans[-1][1] = position
            else:
                text_parts.append(part)
                position += len(part)
        return "".join(text_parts), [(start, end) for start, end in spans]

    def _render_by_prefixes(self, messages: list[dict[str, object]], assistant_turns: list[int], tools: list[dict[str, object]] | None) -> tuple[str, list[tuple[int, int]]]:
        full = self._run(messages, add_generation_prompt=False, tools=tools)
        spans = []
        for n in assistant_turns:
            before = self._run(messages[:n], add_generation_prompt=True, tools=tools)
            through = self._run(messages[: n + 1], add_generation_prompt=False, tools=tools)
            if not (through.startswith(before) and full.startswith(through)):
                raise TemplateError(f"chat template renders turn {n} differently as the conversation grows, so its span cannot be found")
            end = len(through)
            stripped = through.rstrip()
            if stripped.endswith(self._special_tokens) and len(stripped) > len(before):
                end = len(stripped)
            spans.append((len(before), end))
        return full, spans


def _break_all(value: object, protect: tuple[str, ...]) -> object:
    """`_break_tokens` on every string inside a message field or the tools (tool-call arguments
    are nested objects), leaving keys and other values as they are."""
    if not protect:
        return value
    if isinstance(value, str):
        return _break_tokens(value, protect)
    if isinstance(value, dict):
        return {key: _break_all(item, protect) for key, item in value.items()}
    if isinstance(value, list):
        return [_break_all(item, protect) for item in value]
    return value


def _break_tokens(content: str, protect: tuple[str, ...]) -> str:
    for token in protect:
        content = content.replace(token, token[0] + PLAIN_MARK + token[1:])
    return content


def _finish(text: str, spans: list[tuple[int, int]], turns: list[tuple[int, bool]], protect: tuple[str, ...]) -> Rendered:
    """Cut `text` into segments at the spans, then drop PLAIN_MARKs and record where they were."""
    segments, cursor = [], 0
    for (start, end), (turn, trainable) in zip(spans, turns):
        segments.append(Segment(text[cursor:start], False))
        segments.append(Segment(text[start:end], trainable, turn))
        cursor = end
    segments.append(Segment(text[cursor:], False))
    plain_spans: list[tuple[int, int]] = []
    if PLAIN_MARK in text:
        segments, plain_spans = _unmark(segments, protect)
    return Rendered("".join(s.text for s in segments), tuple(s for s in segments if s.text), tuple(plain_spans))


def _unmark(segments: list[Segment], protect: tuple[str, ...]) -> tuple[list[Segment], list[tuple[int, int]]]:
    """Remove PLAIN_MARKs; each one sat after the first character of a protected token."""
    clean_segments, plain_spans, offset = [], [], 0
    for segment in segments:
        pieces = segment.text.split(PLAIN_MARK)
        clean = "".join(pieces)
        position = offset
        for piece in pieces[:-1]:
            position += len(piece)
            start = position - 1
            token = next(t for t in protect if clean.startswith(t, start - offset))
            plain_spans.append((start, start + len(token)))
        clean_segments.append(Segment(clean, segment.trainable, segment.turn))
        offset += len(clean)
    return clean_segments, plain_spans
