"""Render an `Example` through a chat template into ordered `Segment`s.

The segments join to the exact training string (byte for byte what Hugging Face's
`apply_chat_template(messages, tools=tools)` renders), and each says whether its characters are
trained on. Two ways to find the trainable characters, both ending in the same `Rendered`:

1. The template marks them with `{% generation %}...{% endgeneration %}` (every bundled template
   does). We render once with our own `generation` tag that wraps the block in two Unicode
   noncharacters, then cut the string at those marks:

       "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" | "Hello<|im_end|>" | "\n"
        trainable=False                                            trainable=True     False

2. The template has no markers (most chat templates shipped with tokenizers). The conversation is
   rendered once as it is and once with sentinels: each message's content, each assistant's
   reasoning and each tool call's name replaced by a unique marker (a noncharacter-delimited
   number). The two renderings are aligned piece by piece, so every character of the sentinel
   rendering has its place in the real one, and each assistant turn's span is found in the ONE
   full rendering, whatever the template does to earlier turns as the conversation grows:

       sentinel  "<|im_start|>user\n" ①u "<|im_end|>\n<|im_start|>assistant\n" ②a "<|im_end|>\n"
       real      "<|im_start|>user\n" Hi "<|im_end|>\n<|im_start|>assistant\n" Hello "<|im_end|>\n"
       span                                                             [--------------------]

   The rule is "train what the model generates after the generation prompt":
   * Start: where `messages[:i]` rendered with `add_generation_prompt=True` ends, when that is a
     prefix of the full rendering. Otherwise (Qwen3 dropping past reasoning, Mistral moving the
     system text, a generation prompt that opens a think block this turn lacks) the generation
     prompt's tail after its last message is compared with the full rendering after the same
     message, and the span starts where they stop agreeing, backed off to just after a special
     token or a newline: at the latest, the end of the assistant header. So text the template
     prefills (`<think>\n` of DeepSeek-R1) is masked, and text the model writes itself before its
     answer (`<think></think>`, gpt-oss's `<|channel|>final<|message|>`) is trained.
   * Inside: reasoning as rendered (Qwen3 and DeepSeek-R1 show it only after the last user
     message; it is trained where it is rendered, nowhere else), the text, the tool calls in the
     template's own syntax.
   * End: the first stop token after the turn's last marker and before the next message:
     `<|im_end|>`, `<|eot_id|>`, `<|eom_id|>`, gpt-oss `<|call|>`/`<|return|>`/`<|end|>`, GLM's
     next-turn marker `<|user|>`/`<|observation|>` (the model must emit it), the tokenizer's EOS,
     ... (STOP_TOKENS, those the tokenizer has as special tokens). A turn with none (the original
     GLM-4.5 ends its last answer with nothing) ends where `messages[:i+1]` rendered alone stops
     agreeing with the full rendering; its span then has no stop token, which the start-up probe
     warns about once and the report counts (`turn_eot` none).

   * Pieces: a template may write one assistant message in pieces around other messages (Gemma 4
     writes a tool-call message's text after the call's results). Each piece is a span of its
     own (`_pieces`): the first as above, up to `<|tool_response>`, the token that hands over to
     the tool; a later one starts where the results, rendered after the message's calls alone,
     end; the results between stay masked. A marked template does the same with one generation
     block per piece (`_mark_owners` tells each block's message).

Content parts: a template that reads `content` only as a list of parts (Idefics3, SmolVLM: a
string renders as nothing; found on a probe when the Renderer is made) gets each text as one
text part, `[{"type": "text", "text": ...}]`, as Hugging Face's multimodal chat data holds it.

Safety: a tool call whose name the rendering lacks rejects the record (`template_dropped_tool_calls`)
rather than train a turn without it; reasoning on the final assistant turn that the template does
not render rejects it (`template_dropped_reasoning`); reasoning left out of earlier turns by design
is no error (the report counts it, turn_counts.py; both ask `reasoning_shown`). A template whose
layout changes with what a text says beyond the tags sentinels keep (`</think>`,
`<tool_response>`) rejects the record (`template_error`) rather than train part of a turn.

Text a user typed that spells a special token can be kept as plain text (`protect`): each such
occurrence is broken with a third noncharacter before rendering, so the template cannot confuse
it with its own control tokens, and is reported back as a `plain_spans` range of the final text.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from masked_shards import bundled_templates
from masked_shards.build.template_probes import PROBES, PROMPT_PROBE
from masked_shards.records import REASONING_KEYS, Example, Segment

GEN_OPEN, GEN_CLOSE, PLAIN_MARK = "\ufdd0", "\ufdd1", "\ufdd2"
TOKENIZER_TEMPLATE = "tokenizer"
AUTO_TEMPLATE = "auto"
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
SENTINEL_OPEN, SENTINEL_CLOSE = "\ufdd3", "\ufdd4"  # around a sentinel's number: "\ufdd3" "7" "\ufdd4"
# Tokens that end an assistant turn in the families we know, the model's last generated token:
# ChatML, Llama 3 (eot, eom after a built-in tool call), gpt-oss (end, call, return), Phi-3, Gemma
# 1-3, Gemma 4 (`<|tool_response>` after a call), Cohere, SmolVLM/Idefics3, and GLM's next-turn markers. The tokenizer's EOS is
# added per tokenizer (`</s>`, `<|endoftext|>`, DeepSeek's end of sentence, ...).
STOP_TOKENS = (
    "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<|call|>", "<|return|>", "<end_of_turn>", "<turn|>",
    "<|END_OF_TURN_TOKEN|>", "<end_of_utterance>", "<|eot|>", "<|eom|>", "<|tool_response>", "<|user|>", "<|observation|>",
)  # fmt: skip
_SENTINEL = re.compile(f"{SENTINEL_OPEN}(\\d+){SENTINEL_CLOSE}")
# Special-token-like markers in a rendering: <|im_start|>, <|turn>, <turn|>, <｜User｜>, <end_of_turn>, [INST].
_MARKER = re.compile(r"<\|[^<>\s|]*\|?>|<[^<>\s|]+\|>|<｜[^<>\s]*｜>|<[a-z_]+>|\[/?[A-Z_]+\]")
# Tags that templates look for inside a text (Qwen3 and GLM split content at </think>, Qwen3 takes
# a user message wrapped in <tool_response> for a tool result): sentinels keep them, so a
# template decides the same on the sentinel text as on the real one.
_TEXT_TAGS = re.compile(r"(</?think>|</?tool_response>)")


class TemplateError(Exception):
    """A template that cannot be used (config time) or cannot render one record (reject, with
    `reason` as the rejection's code)."""

    def __init__(self, message: str, reason: str = "template_error") -> None:
        super().__init__(message)
        self.reason = reason


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


@dataclass(slots=True, unsafe_hash=True)
class Rendered:
    """The exact training string, its segments, and the ranges to tokenize as plain text."""

    text: str
    segments: tuple[Segment, ...]
    plain_spans: tuple[tuple[int, int], ...] = ()

    def assistant_spans(self) -> list[tuple[int, int, bool]]:
        """(start, end, trainable) of every assistant span, in order; a turn marked `train: false`
        is listed too. A turn written in pieces (Gemma 4: a call, its masked results, then the
        text) has one span per piece."""
        return [(start, end, trainable) for start, end, trainable, _ in self.turn_spans()]

    def turn_spans(self) -> list[tuple[int, int, bool, int]]:
        """`assistant_spans` with the message of each, so `--train-on last` can tell the final
        turn (all its pieces) from the last trainable one."""
        spans, start = [], 0
        for segment in self.segments:
            end = start + len(segment.text)
            if segment.turn is not None:
                spans.append((start, end, segment.trainable, segment.turn))
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
            tokenizer_template = named_templates(tokenizer_template)
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


def named_templates(templates: dict[str, str]) -> str | None:
    """A tokenizer's named chat templates (Hermes 2 Pro and 3, Command-R ship `default` and
    `tool_use`) as the one template that picks between them as `apply_chat_template` does:
    `tool_use` when tools are given (`tools` not None), `default` otherwise. Reading `default`
    alone would train tool records in another format than the model is served in. The newline
    after each tag is what Hugging Face's `trim_blocks` takes away, so each source stays whole."""
    default, tool_use = templates.get("default"), templates.get("tool_use")
    if not (default and tool_use):
        return default
    return f"{{% if tools is not none %}}\n{tool_use}{{% else %}}\n{default}{{% endif %}}"


def match_bundled(original: str, variables: dict[str, str]) -> ChatTemplate:
    """The first bundled chat template that renders every probe (template_probes.py) exactly as
    `original` does, on the probes `original` can render at all, preferring among those one whose
    generation prompt is the original's too (PROMPT_PROBE); `original` itself (as the
    `tokenizer` template) when none does or it renders none. Bundled templates render with
    `as_published=true`, which leaves out a training fix (a stop token the original never writes).
    Either way `matched_sha256` records which original the choice was made for."""
    digest = hashlib.sha256(original.encode("utf-8")).hexdigest()
    compiled = _compile(original)
    expected = {name: text for name in PROBES if (text := _render_probe(compiled, name, variables)) is not None}
    # Compiling is most of the cost (a large template takes a tenth of a second), so a bundled
    # template is compiled only if its text writes one of the markers the original renders
    # (`<|turn>`, `<|im_start|>`, `[INST]`; BOS and EOS come from variables): one that writes
    # none of them cannot render the same, so the choice is the same.
    markers = {found for text in expected.values() for found in _MARKER.findall(text)} - set(variables.values())
    prompt = _render_prompt(compiled, variables)
    matches = []
    if expected:
        for name in bundled_templates.bundled():
            source = bundled_templates.template_path(name).read_text(encoding="utf-8")
            if markers and not any(marker in source for marker in markers):
                continue
            compiled = _compile(source)
            if all(_render_probe(compiled, probe, {**variables, "as_published": True}) == text for probe, text in expected.items()):
                if _render_prompt(compiled, variables) == prompt:
                    return ChatTemplate(name, source, digest)
                matches.append(ChatTemplate(name, source, digest))
    return matches[0] if matches else ChatTemplate(TOKENIZER_TEMPLATE, original, digest)


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


def _render_prompt(template: jinja2.Template, variables: dict[str, object]) -> str | None:
    """The generation prompt after one user message (PROMPT_PROBE), None when the template fails."""
    try:
        return template.render(messages=PROMPT_PROBE, tools=None, add_generation_prompt=True, **variables)
    except Exception:  # noqa: BLE001 - as in _render_probe
        return None


def renders_tools_and_reasoning(source: str, variables: dict[str, str]) -> tuple[bool, bool]:
    """Whether a template writes a tool call (the `call_only` probe's arguments appear, or, for a
    template that writes arguments only as a JSON string, the `string_arguments` probe's) and the
    reasoning of the final assistant turn (the `reasoning` probe's last thought appears)."""
    compiled = _compile(source)
    call = _render_probe(compiled, "call_only", variables) or ""
    as_string = _render_probe(compiled, "string_arguments", variables) or ""
    reasoning = _render_probe(compiled, "reasoning", variables) or ""
    last_thought = PROBES["reasoning"][0][-1]["reasoning_content"]
    return "America/Lima" in call or '"city": "Bergen"' in as_string, str(last_thought) in reasoning


class _GenerationMarks(Extension):
    """`{% generation %}` that wraps its body in GEN_OPEN/GEN_CLOSE instead of tracking indices."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

    def _mark(self, caller: jinja2.runtime.Macro) -> str:
        return GEN_OPEN + caller() + GEN_CLOSE


def tojson(value: object, indent: int | None = None, ensure_ascii: bool = False, separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """Hugging Face's `tojson` filter (no HTML escaping, unlike Jinja's own), for the templates and
    for direct_render.py's writers."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _compile(source: str) -> jinja2.Template:
    """Compile with the same environment settings Hugging Face uses for chat templates, so a
    template renders here exactly as `apply_chat_template` renders it."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationMarks, loopcontrols])
    env.filters["tojson"] = tojson
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
        # One pattern for every special token (Llama 3 has 256 reserved ones): cut from a turn's span
        # before its calls and reasoning are looked for (_check_rendered).
        self._special_pattern = re.compile("|".join(map(re.escape, self._special_tokens))) if self._special_tokens else None
        known = set(special_tokens)
        stops = [t for t in (*STOP_TOKENS, eos_token) if t and (not known or t in known)]
        self._stops = re.compile("|".join(re.escape(t) for t in sorted(set(stops), key=len, reverse=True))) if stops else None
        self._parts = self._strings = False
        self._parts = self._reads_parts_only()
        self._strings = self._reads_string_arguments()

    def _reads_parts_only(self) -> bool:
        """Whether the template reads `content` only as a list of parts (Idefics3, SmolVLM: a
        string renders as nothing, `[{"type": "text", "text": ...}]` renders the text), found on
        the `plain` probe; such a template is then given every text as one text part, as Hugging
        Face's multimodal chat data holds it."""
        messages, _ = PROBES["plain"]
        texts = [str(m["content"]) for m in messages]

        def shows(given: list[dict]) -> set[bool]:
            try:
                rendered = self._run(given, False, None)
            except Exception:  # noqa: BLE001 - a template may fail in any way on a probe (a user's divides by zero): it tells nothing
                return {False}
            return {text in rendered for text in texts}

        return shows(messages) == {False} and shows([_as_parts(m) for m in messages]) == {True}

    def _reads_string_arguments(self) -> bool:
        """Whether the template writes a call's arguments only as a JSON string and fails on an
        object (DeepSeek-R1 and -V3 join them to their text with `+`), found on the `tools` probe.
        The reader holds arguments as objects (formats.py), as most templates want them; such a
        template is then given each call's arguments as `json.dumps` writes them, the OpenAI form
        `{"city": "Paris"}` its models are served in, instead of every call being refused."""
        messages, tools = PROBES["tools"]
        try:
            self._run(messages, False, tools)
            return False
        except Exception:  # noqa: BLE001 - a template may fail in any way on a probe: then it is tried with strings
            pass
        try:
            rendered = self._run([_string_arguments(m) for m in messages], False, tools)
        except Exception:  # noqa: BLE001 - fails either way: records with calls are refused one by one
            return False
        return '"city": "Paris"' in rendered

    def render(self, example: Example, protect: tuple[str, ...] = ()) -> Rendered:
        """Render one example; raises TemplateError when the template refuses or cannot be read."""
        messages = [{key: value if key == "role" else _break_all(value, protect) for key, value in t.message().items()} for t in example.turns]
        return self.render_messages(messages, [t.trainable for t in example.turns], tools=_break_all(example.tools, protect), protect=protect)

    def render_messages(self, messages: list[dict], trainable: list[bool], *, tools: list[dict] | None = None, protect: tuple[str, ...] = ()) -> Rendered:
        """Render Hugging Face chat messages (and `tools`) as `apply_chat_template` does, with the
        spans of the assistant messages; `trainable[n]` says whether message n is trained on."""
        messages = [{key: value for key, value in message.items() if value is not None} for message in messages]  # as Hugging Face does
        assistant = [n for n, message in enumerate(messages) if message.get("role") == "assistant"]
        if self._marked:
            text, marks = self._render_marked(messages, tools)
            in_order = len(marks) == len(assistant) and not _may_pair_wrongly(messages)
            owners = assistant if in_order else self._mark_owners(messages, tools, len(marks))
            spans = [(start, end, n) for (start, end), n in zip(marks, owners)]
        else:
            text, spans = self._render_by_sentinels(messages, tools, assistant)
        return self.checked(messages, trainable, tools, text, spans, protect)

    def checked(self, messages: list[dict], trainable: list[bool], tools: list[dict] | None, text: str, spans: list[tuple[int, int, int]], protect: tuple[str, ...] = ()) -> Rendered:
        """A rendering's `text` and assistant `spans` (start, end, message) put through every check
        (each assistant message rendered, its text, calls and final reasoning with it), then cut
        into segments: for Jinja's renderings here, and for direct_render.py's writers, whose
        conversations must be refused exactly where these are."""
        assistant = [n for n, message in enumerate(messages) if message.get("role") == "assistant"]
        missing = sorted(set(assistant) - {n for _, _, n in spans})
        if missing:
            raise TemplateError(f"the chat template renders nothing of assistant message {missing[0]}")
        full = functools.cache(lambda: self._run(messages, False, tools))  # the rendering variants are compared with, made once if needed
        self._check_text_beside_calls(messages, tools, text, spans, full)  # first: a dropped text must not pass for a call's
        unsure = _check_rendered(text, spans, messages, self._special_pattern, self._hidden_reasoning(messages, tools, full))
        if unsure is not None and full() == self._run(_without_reasoning(messages, unsure), False, tools):
            raise _dropped_reasoning(unsure)
        return _finish(text, [(start, end, n, trainable[n]) for start, end, n in spans], protect)

    def _check_text_beside_calls(self, messages: list[dict], tools: list[dict] | None, text: str, spans: list[tuple[int, int, int]], full: Callable[[], str]) -> None:
        """Refuse a calling message whose text the template leaves out (Llama 3.1/3.2, gpt-oss,
        Hermes and Command R7B write a calling message as its calls alone, DeepSeek-R1 writes only
        the first calling message's text): it would vanish from training. Long text found in the
        message's span is rendered; otherwise (short text may sit in a call's arguments or the
        markup, and a template may move it: Nemotron writes "<think></think>" before it) the
        rendering without it decides: the same rendering means it is left out."""
        for n, message in enumerate(messages):
            written = _text_beside_calls(message) if message.get("tool_calls") else ""
            if not written:
                continue
            span = GEN_OPEN.join(text[start:end] for start, end, owner in spans if owner == n)
            if len(written) >= SHORT_REASONING and written in span:
                continue
            if self._run([{**m, "content": ""} if k == n else m for k, m in enumerate(messages)], False, tools) == full():
                raise TemplateError(f"the chat template leaves out the text of message {n}, written beside its tool calls", "template_dropped_text")

    def _hidden_reasoning(self, messages: list[dict], tools: list[dict] | None, full: Callable[[], str]) -> set[int]:
        """The calling messages whose short reasoning the template does not render (the rendering
        is the same without it). Such reasoning may still occur in the calls' own text (reasoning
        "a", a call `functions.a:0`), where cutting it out would hide a call; longer reasoning does
        not occur by chance, so only short reasoning costs a render (SHORT_REASONING)."""
        short = [n for n, m in enumerate(messages) if m.get("tool_calls") and 0 < len(_reasoning_of(m)) < SHORT_REASONING]
        return {n for n in short if self._run(_without_reasoning(messages, n), False, tools) == full()}

    def generation_prompt(self, example: Example) -> str:
        """The text a model is given to write the next assistant turn after `example`'s messages
        (`add_generation_prompt=True`), without generation marks."""
        text = self._run([t.message() for t in example.turns], add_generation_prompt=True, tools=example.tools)
        return text.replace(GEN_OPEN, "").replace(GEN_CLOSE, "")

    def render_text(self, messages: list[dict], *, add_generation_prompt: bool, tools: list[dict] | None = None) -> str:
        """The template's text for these messages, nothing located (the start-up probe's look at
        the generation prompt)."""
        return self._run(messages, add_generation_prompt, tools)

    def _run(self, messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None) -> str:
        if self._parts:
            messages = [_as_parts(message) for message in messages]
        if self._strings:
            messages = [_string_arguments(message) for message in messages]
        try:
            return self._jinja.render(messages=messages, tools=tools, documents=None, add_generation_prompt=add_generation_prompt, **self._variables)
        except TemplateError:
            raise
        except jinja2.TemplateError as err:
            raise TemplateError(f"template failed: {err}") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as err:  # a template's own Python-level slip
            raise TemplateError(f"template failed: {type(err).__name__}: {err}") from None

    def _render_marked(self, messages: list[dict], tools: list[dict] | None) -> tuple[str, list[tuple[int, int]]]:
        marked = self._run(messages, False, tools)
        text_parts, spans, position = [], [], 0
        for part in re.split(f"([{GEN_OPEN}{GEN_CLOSE}])", marked):
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

    def _mark_owners(self, messages: list[dict], tools: list[dict] | None, count: int) -> list[int]:
        """The assistant message of each of `count` generation blocks, when they may not pair up
        with the assistant messages in order (Gemma 4 writes a tool-call message's text in a
        second block after the call's results): a block belongs to the message whose sentinels it
        holds. One that holds none (a bare stop token) belongs to the next assistant message that
        has nothing to render, if one comes before the next block's message, else to the message
        of the block before it (Gemma 4's `<turn|>` after the results of a call without text)."""
        marked, _, owners = _with_sentinels(messages)
        rendered = self._run(marked, False, tools)
        blocks = [{owners[int(number)] for number in _SENTINEL.findall(block)} for block in re.findall(f"{GEN_OPEN}([^{GEN_CLOSE}]*){GEN_CLOSE}", rendered)]
        found: list[int] = []
        for k, own in enumerate(blocks):
            if not own:
                after = found[-1] if found else -1
                before = next((min(later) for later in blocks[k + 1 :] if later), len(messages))
                empty = [n for n in range(after + 1, before) if messages[n].get("role") == "assistant" and _renders_nothing(messages[n])]
                own = {empty[0]} if empty else set(found[-1:])
            if len(own) != 1 or messages[min(own)].get("role") != "assistant":
                raise TemplateError("the template's generation blocks cannot each be told to one assistant message")
            found.append(min(own))
        if len(found) != count:
            raise TemplateError("the template's generation blocks cannot each be told to one assistant message")
        return found

    def _render_by_sentinels(self, messages: list[dict], tools: list[dict] | None, assistant: list[int]) -> tuple[str, list[tuple[int, int, int]]]:
        """The real rendering and the spans (start, end, message) of each assistant turn's
        pieces in it, found in the sentinel rendering (module docstring, method 2) and carried
        over by the alignment."""
        real = self._run(messages, False, tools)
        marked, values, owners = _with_sentinels(messages)
        sentinel = self._run(marked, False, tools)
        place = _align(sentinel, real, values)
        found = [(m.start(), m.end(), owners[int(m.group(1))]) for m in _SENTINEL.finditer(sentinel)]
        spans, previous = [], 0
        for n in assistant:
            pieces = _pieces(sentinel, found, n)
            if not pieces:
                if messages[n].get("tool_calls"):
                    raise TemplateError(f"the chat template leaves out the tool calls of message {n}", "template_dropped_tool_calls")
                raise TemplateError(f"the chat template renders nothing of assistant message {n}")
            for first, limit, upto in pieces:
                # A later piece follows messages n+1..upto-1 (the call's results): the model starts
                # it where those results, after message n's calls alone, leave off.
                prompt = marked[:n] if upto == n else [*marked[:n], _calls_only(marked[n]), *marked[n + 1 : upto]]
                start = max(previous, min(first, self._start(sentinel, prompt, first, tools)))
                end = self._end(sentinel, marked[: max(n + 1, upto)], found, n, first, limit, tools)
                spans.append((place(start), place(end), n))
                previous = end
            closing = self._closing_after_results(sentinel, marked, n, pieces, tools)
            if closing is not None:
                spans.append((place(closing[0]), place(closing[1]), n))
                previous = closing[1]
        return real, spans

    def _closing_after_results(self, sentinel: str, marked: list[dict], n: int, pieces: list[tuple[int, int, int]], tools: list[dict] | None) -> tuple[int, int] | None:
        """The stop token a template writes for a tool-call message with no text of its own right
        after the call's results, when the model's turn stays open over them (Gemma 4: `<turn|>`
        after `<tool_response|>`, then a user message): what the model writes on reading the
        results, so trained, as a piece of message n. None for every template that closes the
        turn before the results, or that has the message's text there (a piece of its own).

        Found where the generation prompt after the results is a prefix of the rendering and a
        stop token starts right where it ends, before the next message."""
        if not marked[n].get("tool_calls") or any(upto != n for _, _, upto in pieces) or self._stops is None:
            return None
        k = next((i for i in range(n + 1, len(marked)) if marked[i].get("role") != "tool"), len(marked))
        if k == n + 1 or (k < len(marked) and marked[k].get("role") == "assistant"):
            return None  # no results, or the same model turn goes on into the next assistant message
        after = self._run([*marked[:n], _calls_only(marked[n]), *marked[n + 1 : k]], True, tools)
        stop = self._stops.match(sentinel, len(after)) if sentinel.startswith(after) else None
        return (len(after), stop.end()) if stop else None

    def _start(self, sentinel: str, before: list[dict], first: int, tools: list[dict] | None) -> int:
        """Where the model starts generating turn n: the end of the generation prompt after
        `before` (messages[:n]), or where that prompt and the rendering stop agreeing."""
        prompt = self._run(before, True, tools)
        if sentinel.startswith(prompt):
            return len(prompt)
        for mark in reversed(list(_SENTINEL.finditer(prompt))):  # the last message both show
            at = sentinel.rfind(mark.group(), 0, first)
            if at >= 0:
                anchor = at + len(mark.group())
                return anchor + _agreed(prompt[mark.end() :], sentinel[anchor:first], self._special_tokens)
        return _agreed(prompt, sentinel[:first], self._special_tokens)

    def _end(self, sentinel: str, through: list[dict], found: list[tuple[int, int, int]], n: int, first: int, limit: int, tools: list[dict] | None) -> int:
        """Where turn n ends: after the first stop token that follows its last sentinel (each
        sentinel's first showing: gpt-oss repeats a call's name in the result's header) and comes
        before the next message (at `limit`); without one, where `through` (messages[:n+1])
        rendered alone stops agreeing with the full rendering."""
        last = max({sentinel[a:b]: b for a, b, owner in reversed(found) if owner == n and first <= a < limit}.values())
        region = sentinel[last:limit]
        stop = self._stops.search(region) if self._stops else None
        if stop:
            return last + stop.end()
        alone = self._run(through, False, tools)
        mark = sentinel[sentinel.rfind(SENTINEL_OPEN, 0, last) : last]
        tail = alone[alone.rfind(mark) + len(mark) :] if mark in alone else ""
        return last + len(region[: _agreed(tail, region, self._special_tokens)].rstrip())


def _pieces(sentinel: str, found: list[tuple[int, int, int]], n: int) -> list[tuple[int, int, int]]:
    """The pieces in which the rendering writes assistant message n, as (first, limit, upto):
    where the piece's first sentinel starts, where the next message's first sentinel after it
    starts (the piece ends before), and the number of messages rendered before it (n for the
    first piece; for a later one, up to the last other message before it). Usually one piece;
    Gemma 4 writes the text of a tool-call message after the call's results, a second piece:

        <|tool_call>call:①{..}<tool_call|><|tool_response> | response:..②..<tool_response|> | ③<turn|>
        piece (first, ..)                                    message n+1                     piece (.., upto n+2)

    Only each sentinel's first showing counts (gpt-oss repeats a call's name in its result's
    header, which is no piece of the call's message)."""
    seen: set[str] = set()
    pieces: list[tuple[int, int, int]] = []
    other = -1  # the last sentinel of another message seen so far
    joined = False  # whether the current piece can take the next sentinel of message n
    for k, (a, b, owner) in enumerate(found):
        if owner != n:
            other, joined = k, False
            continue
        if sentinel[a:b] in seen:
            continue
        seen.add(sentinel[a:b])
        if not joined:
            limit = next((c for c, _, o in found[k:] if o != n), len(sentinel))
            pieces.append((a, limit, n if not pieces else max(n + 1, found[other][2] + 1)))
            joined = True
    return pieces


def _renders_nothing(message: dict) -> bool:
    """An assistant message with no text, no tool calls and no reasoning."""
    return not message.get("tool_calls") and not any(isinstance(message.get(key), str) and message[key].strip() for key in ("content", *REASONING_KEYS))


def _may_pair_wrongly(messages: list[dict]) -> bool:
    """Whether as many generation blocks as assistant messages may still not pair up in order: a
    message with text and tool calls whose results follow may take two blocks (Gemma 4) while one
    with nothing to render may take none."""
    pieces = any(m.get("tool_calls") and isinstance(m.get("content"), str) and m["content"].strip() and n + 1 < len(messages) and messages[n + 1].get("role") == "tool" for n, m in enumerate(messages))
    return pieces and any(m.get("role") == "assistant" and _renders_nothing(m) for m in messages)


def _as_parts(message: dict) -> dict:
    """A message with its string content as one text part: "Hi" -> [{"type": "text", "text": "Hi"}]."""
    content = message.get("content")
    return {**message, "content": [{"type": "text", "text": content}]} if isinstance(content, str) else message


def _string_arguments(message: dict) -> dict:
    """A message with each tool call's object arguments as a JSON string: {"city": "Paris"} ->
    '{"city": "Paris"}' (a call given as a bare {"name", "arguments"} too)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return message
    written = []
    for call in calls:
        if isinstance(call, dict):
            holder = dict(call["function"]) if isinstance(call.get("function"), dict) else call
            if isinstance(holder.get("arguments"), dict):
                holder = {**holder, "arguments": json.dumps(holder["arguments"], ensure_ascii=False)}
            call = {**call, "function": holder} if isinstance(call.get("function"), dict) else holder
        written.append(call)
    return {**message, "tool_calls": written}


def _calls_only(message: dict) -> dict:
    """An assistant message with its text and reasoning taken out: what stands before its
    results when its text is written after them."""
    return {**{key: value for key, value in message.items() if key not in REASONING_KEYS}, "content": ""}


def _with_sentinels(messages: list[dict]) -> tuple[list[dict], list[str], list[int]]:
    """The messages with each text a span is located by replaced by numbered sentinels: every
    message's content, an assistant's reasoning (the same sentinels under all its names) and its
    tool calls' names. Returns them, each sentinel's real value, and the message it belongs to.
    Empty texts are left as they are, so a template's `if message.content` decides the same."""
    values: list[str] = []
    owners: list[int] = []

    def sentinel(value: str, n: int) -> str:
        """The text with each non-blank run between _TEXT_TAGS replaced by a sentinel."""
        pieces = _TEXT_TAGS.split(value)
        for k in range(0, len(pieces), 2):
            if pieces[k].strip():
                values.append(pieces[k])
                owners.append(n)
                pieces[k] = f"{SENTINEL_OPEN}{len(values) - 1}{SENTINEL_CLOSE}"
        return "".join(pieces)

    marked = []
    for n, message in enumerate(messages):
        message = dict(message)
        if isinstance(message.get("content"), str) and message["content"]:
            message["content"] = sentinel(message["content"], n)
        if message.get("role") == "assistant":
            reasoning: dict[str, str] = {}
            for field in REASONING_KEYS:
                value = message.get(field)
                if isinstance(value, str) and value:
                    message[field] = reasoning[value] if value in reasoning else reasoning.setdefault(value, sentinel(value, n))
            if isinstance(message.get("tool_calls"), list):
                message["tool_calls"] = [_named(call, lambda name: sentinel(name, n)) for call in message["tool_calls"]]
        marked.append(message)
    return marked, values, owners


def _named(call: object, rename) -> object:
    """A tool call with its name replaced (`{"function": {"name"}}`, or a bare `{"name"}`)."""
    if not isinstance(call, dict):
        return call
    call = dict(call)
    holder = call["function"] = dict(call["function"]) if isinstance(call.get("function"), dict) else call
    if isinstance(holder.get("name"), str) and holder["name"]:
        holder["name"] = rename(holder["name"])
    return call


def _align(sentinel: str, real: str, values: list[str]):
    """A map from positions of the sentinel rendering to positions of the real one.

    The sentinel rendering is literal pieces and sentinels; the real one is the same pieces with
    each sentinel's text as the template rendered it: the value, trimmed, or JSON-escaped, or (a
    template that cuts text, as DeepSeek-R1 cuts reasoning out of content) whatever lies before
    the next piece. Raises TemplateError when the pieces do not line up (a template whose
    layout depends on what the text says)."""
    pieces = _SENTINEL.split(sentinel)
    literals, numbers = pieces[0::2], [int(p) for p in pieces[1::2]]
    starts, real_starts = [0], [0]  # each literal's place in both renderings
    position, at = 0, 0
    if not real.startswith(literals[0]):
        raise _unaligned()
    for k, number in enumerate(numbers):
        position += len(literals[k]) + len(f"{SENTINEL_OPEN}{number}{SENTINEL_CLOSE}")
        at += len(literals[k])
        length = _rendered_length(real, at, values[number], literals[k + 1], k + 1 == len(numbers))
        if length is None:
            raise _unaligned()
        at += length
        starts.append(position)
        real_starts.append(at)
    if real[at:] != literals[-1]:
        raise _unaligned()
    ends = [start + len(literal) for start, literal in zip(starts, literals)]

    def place(p: int) -> int:
        k = bisect_right(starts, p) - 1
        return real_starts[k] + min(p, ends[k]) - starts[k]  # inside a sentinel: where its text starts

    return place


def _rendered_length(real: str, at: int, value: str, following: str, last: bool) -> int | None:
    """How many characters of `real` from `at` a sentinel's text takes, given the literal piece
    that must follow it (the last piece must end the rendering)."""
    for form in _forms(value):
        if real.startswith(form, at) and (len(real) - len(following) == at + len(form) if last else real.startswith(following, at + len(form))):
            return len(form)
    end = len(real) - len(following) if last else (real.find(following, at) if following else -1)
    return end - at if end >= at else None


def _forms(value: str) -> Iterator[str]:
    """The ways templates write a text, the plain one first (and usually the only one tried):
    as it is, trimmed (`| trim`, Qwen3's `strip('\\n')`), or JSON-escaped (`| tojson`)."""
    yield value
    yield from (value.strip(), value.strip("\n"), value.lstrip("\n"), value.rstrip("\n"), value.lstrip(), value.rstrip())
    yield json.dumps(value)[1:-1]
    yield json.dumps(value, ensure_ascii=False)[1:-1]


def _unaligned() -> TemplateError:
    return TemplateError("the chat template lays this conversation out differently depending on what its messages say, so the assistant spans cannot be located")


def _agreed(expected: str, rendered: str, special_tokens: tuple[str, ...]) -> int:
    """How far `rendered` agrees with `expected`: all of it, or the common start backed off to
    just after a special token or a newline, never inside a token the model writes whole.

        expected "<|im_start|>assistant\n<think>\n"   rendered "<|im_start|>assistant\n<tool_call>"  ->  22"""
    agreed = len(os.path.commonprefix([expected, rendered]))
    if agreed == len(expected):
        return agreed
    while agreed and rendered[agreed - 1] != "\n" and not any(rendered.endswith(t, 0, agreed) for t in special_tokens):
        agreed -= 1
    return agreed


def _shown(value: object, span: str) -> bool:
    """Whether a string argument is in the span, as it is, JSON-escaped, or backslash-escaped for
    single quotes (LFM2 writes `f(a='it\\'s')`); other values pass."""
    if not isinstance(value, str):
        return True
    quoted = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return any(form in span for form in (value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], quoted))


# Reasoning this short may be found in a span by chance (a template's own "<think>" holds "<"), so
# whether it is shown is settled by rendering without it; longer text is not written by chance.
SHORT_REASONING = 64


def _check_rendered(text: str, spans: list[tuple[int, int, int]], messages: list[dict], special: re.Pattern[str] | None = None, hidden: set[int] = frozenset()) -> int | None:
    """Reject what would train a turn without something it carries. Past turns' reasoning may be
    left out (Qwen3, DeepSeek-R1 do by design); the final assistant turn's may not. The final
    assistant turn is the last one when no user message follows it (tool results may). A turn
    written in pieces (`spans` holds (start, end, message) of each) is judged on them all.

    A tool call is rendered when its name (as often as calls bear it), each key of its arguments
    and each string value are in the turn's span, looked for in what is left of it once the
    template's special tokens and the turn's own text and reasoning are cut out (a call named "d"
    is not in "<|im_end|>", nor one named "get" in "Let me get it"); reasoning as
    `reasoning_shown` says, in the span without special tokens (reasoning "<" is not shown by
    "<|im_end|>"). Short reasoning found so may still be text the template writes anyway ("<" in
    a plain "<think>"): the final message's number is returned then, for the caller to render
    once without it and compare (SHORT_REASONING); None otherwise. `hidden`: the calling messages
    whose reasoning is known not to be rendered (Renderer._hidden_reasoning), so not cut out."""
    pieces: dict[int, list[str]] = {}
    for start, end, n in spans:
        pieces.setdefault(n, []).append(text[start:end])
    assistant = sorted(pieces)
    final = assistant[-1] if assistant and all(m.get("role") != "user" for m in messages[assistant[-1] :]) else None
    for n in assistant:
        span = GEN_OPEN.join(pieces[n])  # a character no text holds, so no string spans two pieces
        calls = [call.get("function", call) for call in messages[n].get("tool_calls") or [] if isinstance(call, dict)]
        names = [call.get("name") for call in calls]
        reasoning = _reasoning_of(messages[n]) or None
        if not calls and (n != final or reasoning is None):
            continue  # nothing to look for: most turns, so the cut below stays off the common path
        if special is not None:  # the template's own tokens hold no call or reasoning ("d" in "<|im_end|>")
            span = special.sub(GEN_OPEN, span)
        rest = _calls_part(span, messages[n], n not in hidden) if calls else ""
        for call in calls:
            name, arguments = call.get("name"), call.get("arguments")
            arguments = arguments if isinstance(arguments, dict) else {}
            shown = isinstance(name, str) and bool(name) and rest.count(name) >= names.count(name)  # gpt-oss renders only the first of parallel calls
            if not shown or any(str(key) not in rest or not _shown(value, rest) for key, value in arguments.items()):
                raise TemplateError(f"the chat template leaves out the tool call {name!r} of message {n}", "template_dropped_tool_calls")
        if n == final and reasoning is not None:
            if reasoning_shown(span, 0, len(span), reasoning, messages[n].get("content")) < 0:
                raise _dropped_reasoning(n)
            if len(reasoning.strip()) < SHORT_REASONING:
                return n
    return None


def _text_beside_calls(message: dict) -> str:
    """The text a calling message writes beside its calls, stripped, as templates that cut
    reasoning from it (after the last </think>) leave it; "" for none."""
    content = message.get("content")
    return content.split("</think>")[-1].strip() if isinstance(content, str) else ""


def _dropped_reasoning(n: int) -> TemplateError:
    return TemplateError(f"the chat template does not render the reasoning of the final assistant message {n}", "template_dropped_reasoning")


def _without_reasoning(messages: list[dict], n: int) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in REASONING_KEYS} if i == n else m for i, m in enumerate(messages)]


def _calls_part(span: str, message: dict, reasoning_shown_here: bool = True) -> str:
    """A turn's span without the turn's own text and reasoning (each cut once, stripped as
    templates strip them; the reasoning only where it may be rendered): what is left is where its
    calls can be."""
    keys = ("content", *REASONING_KEYS) if reasoning_shown_here else ("content",)
    for own in dict.fromkeys(message.get(key) for key in keys):  # reasoning is under two keys
        if isinstance(own, str) and own.strip():
            span = span.replace(own.strip(), GEN_OPEN, 1)
    return span


def _reasoning_of(message: dict) -> str:
    """A message's reasoning, stripped, under either name templates read; "" for none."""
    return next((message[key].strip() for key in REASONING_KEYS if isinstance(message.get(key), str) and message[key].strip()), "")


def reasoning_shown(text: str, start: int, end: int, reasoning: str, content: object) -> int:
    """Where an assistant turn's reasoning is rendered in its span `text[start:end]`, -1 when it is
    not: found by its stripped text (templates strip it), and only when the span holds it more
    often than the turn's own text does (an answer that repeats its thought is no sign the thought
    is shown). The one judgement of "is this turn's reasoning rendered", for the rejection here
    and the report's count (turn_counts.py).

        span "<think>\n4 = 2+2\n</think>\n\n4"  reasoning "4 = 2+2"  content "4"  ->  start + 8"""
    wanted = reasoning.strip()
    if not wanted:
        return -1
    in_content = content.count(wanted) if isinstance(content, str) else 0
    return text.find(wanted, start, end) if text.count(wanted, start, end) > in_content else -1


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


def _finish(text: str, spans: list[tuple[int, int, int, bool]], protect: tuple[str, ...]) -> Rendered:
    """Cut `text` into segments at the spans (start, end, message, trainable), then drop
    PLAIN_MARKs and record where they were."""
    segments, cursor = [], 0
    for start, end, turn, trainable in spans:
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
