"""The merchants' message templates: Jinja2, rendered in its ``SandboxedEnvironment`` (no
attribute that starts with ``_``, no unsafe callable: ``{{ ''.__class__.__mro__ }}`` raises
``SecurityError``), undefined variables refused (``StrictUndefined``), HTML autoescaped. A
loop's templates are rendered once with sample values when it is saved, so a template that
cannot render is refused then, not when its first reminder is due.

Jinja2 rather than ``str.format`` or a hand-written substitution: merchants want conditionals
(``{% if incentive %}``) and filters, and the sandbox is the maintained way to run a template
a third party wrote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

#: The variables a template may use.
VARIABLES = ("name", "product", "incentive", "link")
#: What a template is tried with when its loop is saved.
SAMPLE: dict[str, str] = {
    "name": "Alex",
    "product": "Colombian coffee beans 1 kg",
    "incentive": "200 bonus points",
    "link": "https://loyalty.example.com/reorder/sample",
}

_TEXT = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_HTML = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)


class TemplateError(ValueError):
    """A template that does not compile or render (its message says why)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str | None


def _render(env: SandboxedEnvironment, source: str, values: dict[str, Any]) -> str:
    try:
        return env.from_string(source).render(values)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error on line {exc.lineno}: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{exc} (the variables: {', '.join(VARIABLES)})") from None
    except Exception as exc:  # anything a template can raise (a filter's TypeError, ...)
        raise TemplateError(f"it does not render: {type(exc).__name__}: {exc}") from None


def render(subject: str, text: str, html: str | None, values: dict[str, Any]) -> Rendered:
    """The message's subject and text (no escaping) and HTML (values escaped)."""
    return Rendered(
        subject=" ".join(_render(_TEXT, subject, values).split()),
        text=_render(_TEXT, text, values),
        html=None if html is None else _render(_HTML, html, values),
    )


def check(subject: str, text: str, html: str | None) -> None:
    """Refuse (``TemplateError``) a template that would not render."""
    render(subject, text, html, SAMPLE)


__all__ = ["SAMPLE", "VARIABLES", "Rendered", "TemplateError", "check", "render"]
