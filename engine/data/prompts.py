"""Prompt templates: how the LLM reads the same sample the CRM sees as ids."""

from __future__ import annotations

# CoReLLa's template A (as in ReLLa): the most recent history items with ratings, then the target.
TEMPLATE_A = (
    "Below is the rating history of a user: {history}. Please predict whether the user will "
    "like {target} based on his/her rating history and the quality of the target item. "
    "You should ONLY answer no or yes. Answer:"
)


def format_history(titles: list[str], ratings: list[float], binary: bool) -> str:
    """'"Toy Story (1995)", 5 stars; ...' oldest first, as a reader would tell the story."""
    if binary:  # label-only data (clicks) has no stars to show
        parts = [f'"{t}", {"liked" if r >= 1 else "not liked"}' for t, r in zip(titles, ratings)]
    else:
        parts = [f'"{t}", {r:g} star{"" if r == 1 else "s"}' for t, r in zip(titles, ratings)]
    return "; ".join(parts)


def render(template: str, history: str, target: str) -> str:
    return template.format(history=history, target=f'"{target}"')


def render_parts(template: str, history: str, target: str) -> tuple[str, str]:
    """The prompt cut before its target, (prefix, suffix) with prefix + suffix equal to
    render(...): prompts that share a history share the prefix (engine.models.llm scores it
    once). The cut sits before the space that precedes the target, where the tokenizer splits
    anyway; a template with its history after the target shares nothing ("", prompt)."""
    head, tail = template.split("{target}", 1)
    if "{history}" in tail:
        return "", render(template, history, target)
    prefix = head.format(history=history)
    stripped = prefix.rstrip(" ")
    spaces = prefix[len(stripped):]
    return stripped, spaces + f'"{target}"' + tail.format()
