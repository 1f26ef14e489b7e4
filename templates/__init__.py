"""The bundled chat-template library: one Hugging Face-compatible Jinja file per model family.

Each file marks the tokens a model is trained on with `{% generation %}...{% endgeneration %}`,
so the same text works as `tokenizer.chat_template` and as our source of trainable spans. The
first line of each file is a `{#- name: description -#}` comment, which `bundled()` reads.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent
# Prompt templates that are not chat templates (they render one user turn, not a conversation).
PROMPT_TEMPLATES = frozenset({"translate"})


def bundled() -> dict[str, str]:
    """Chat-template name -> one-line description, for every bundled chat template."""
    found = {}
    for path in sorted(TEMPLATE_DIR.glob("*.jinja"), key=lambda p: p.stem):
        if path.stem in PROMPT_TEMPLATES:
            continue
        first = path.read_text(encoding="utf-8").splitlines()[0]
        found[path.stem] = first.removeprefix("{#-").removesuffix("-#}").split(":", 1)[-1].strip()
    return found


def template_path(name: str) -> Path:
    """The file of a bundled template (the caller checks the name against `bundled()`)."""
    return TEMPLATE_DIR / f"{name}.jinja"
