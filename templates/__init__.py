"""The bundled chat-template library: one Hugging Face-compatible Jinja file per model family.

Each file marks the tokens a model is trained on with `{% generation %}...{% endgeneration %}`,
so the same text works as `tokenizer.chat_template` and as our source of trainable spans. The
first line of each file is a comment that names the template, describes it and ends with the
family's own BOS and EOS ("none" where the family has no BOS), the one record of them:

    {#- llama3: Meta-Llama-3-Instruct headers; ... (bos <|begin_of_text|>, eos <|eot_id|>) -#}

`bundled()` reads the descriptions; `family_tokens()` the BOS and EOS, which
`masked-shards templates NAME` renders with when no tokenizer is given.

A template reproduces its family's original byte for byte under `apply_chat_template(messages,
tools=...)`; the one allowed difference is a documented training fix (a stop token the original
never writes, glm4.5), which the template leaves out when rendered with `as_published=true`, so
`--template auto` can compare it with the original.
"""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent
# Prompt templates that are not chat templates (they render one user turn, not a conversation).
PROMPT_TEMPLATES = frozenset({"translate"})
_FAMILY_TOKENS = re.compile(r"\s*\(bos (\S+), eos (\S+)\)$")


def bundled() -> dict[str, str]:
    """Chat-template name -> one-line description, for every bundled chat template."""
    found = {}
    for path in sorted(TEMPLATE_DIR.glob("*.jinja"), key=lambda p: p.stem):
        if path.stem in PROMPT_TEMPLATES:
            continue
        found[path.stem] = _FAMILY_TOKENS.sub("", _header(path.read_text(encoding="utf-8")))
    return found


def family_tokens(source: str) -> tuple[str | None, str | None] | None:
    """(BOS, EOS) named on a template's first line, None for "none"; None if the line names none
    (a user's own template file may not)."""
    found = _FAMILY_TOKENS.search(_header(source))
    return tuple(None if token == "none" else token for token in found.groups()) if found else None


def _header(source: str) -> str:
    """The description on a template's first line: `{#- name: description -#}` -> description."""
    first = source.splitlines()[0] if source else ""
    return first.removeprefix("{#-").removesuffix("-#}").split(":", 1)[-1].strip()


def template_path(name: str) -> Path:
    """The file of a bundled template (the caller checks the name against `bundled()`)."""
    return TEMPLATE_DIR / f"{name}.jinja"
