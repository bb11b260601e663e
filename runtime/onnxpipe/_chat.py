"""Chat messages -> prompt text, with the folder's Jinja chat template, rendered as transformers renders it
(sandboxed, trim_blocks and lstrip_blocks, ``raise_exception``, ``add_generation_prompt``).

Needs ``jinja2``, the ``chat`` extra (``pip install 'onnxpipe[chat]'``): only chat input uses it, so the runtime
install stays onnxruntime, tokenizers and numpy; without it, chat input raises ChatExtraMissingError.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .errors import ChatExtraMissingError, ChatTemplateError


def is_chat(value: Any) -> bool:
    """A conversation: a list of {"role", "content"} dicts."""
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def render(
    template: str | None, messages: Sequence[dict[str, Any]], special_tokens: dict[str, str | None], folder: object = ""
) -> str:
    """The prompt text for ``messages`` (ending with the assistant's turn opened).

    Example:
        >>> render("{% for m in messages %}{{ m['content'] }}{% endfor %}", [{"role": "user", "content": "hi"}], {})
        'hi'
    """
    if template is None:
        raise ChatTemplateError(
            f"chat messages were given, but {folder} has no chat template (a base model, not a chat/instruct one); "
            "pass the prompt as a string instead, or export a checkpoint whose tokenizer has a chat_template"
        )
    try:
        from jinja2 import ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ChatExtraMissingError(
            "chat messages need jinja2 to render the chat template: pip install 'onnxpipe[chat]' "
            "(or pass the prompt as a string)"
        ) from None

    def raise_exception(message: str) -> None:
        raise ChatTemplateError(f"the chat template refused these messages: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
        x, indent=indent, ensure_ascii=ensure_ascii
    )
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=list(messages),
            add_generation_prompt=True,
            **{k: v for k, v in special_tokens.items() if v is not None},
        )
    except ChatTemplateError:
        raise
    except Exception as e:  # a template error names the template line
        raise ChatTemplateError(f"the chat template of {folder} failed on these messages: {e}") from e
