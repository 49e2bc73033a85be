"""The workspace's tab ids, and the operator's list of tabs to hide (pure: no Django, no Gradio).

The ids are the Gradio tab ids of `frontend/workspace/ui.py` (`Workspace.tabs_by_id`), in their
order on the page. Operators hide tabs (PAI's `--always-hide-tabs`) for the whole platform with
`ATELIER_HIDDEN_TABS` (`config/settings.py`) or per tenant with `Tenant.hidden_workspace_tabs`
(Django admin); both are validated here, so a typo is an error, never a tab silently left shown.
txt2img is the workspace itself (PNG Info and BeautifulPrompt send their results to it) and
cannot be hidden.
"""

from __future__ import annotations

from collections.abc import Iterable

BEAUTIFUL_PROMPT_TAB = "beautiful-prompt"
EXTRAS_TAB = "extras"

WORKSPACE_TABS: tuple[str, ...] = (
    "txt2img", "img2img", EXTRAS_TAB, BEAUTIFUL_PROMPT_TAB, "gallery", "pnginfo", "extensions", "settings",
)
ALWAYS_SHOWN_TABS: frozenset[str] = frozenset({"txt2img"})
HIDEABLE_TABS: tuple[str, ...] = tuple(tab for tab in WORKSPACE_TABS if tab not in ALWAYS_SHOWN_TABS)

# How operators may also spell a tab (PAI and A1111 name the PNG Info tab "pnginfo" and
# BeautifulPrompt "beautiful_prompt"/"beautifulprompt").
_ALIASES = {"beautifulprompt": BEAUTIFUL_PROMPT_TAB, "beautiful_prompt": BEAUTIFUL_PROMPT_TAB,
            "png_info": "pnginfo", "png-info": "pnginfo"}


class UnknownTab(ValueError):
    """A tab name that is not one of `HIDEABLE_TABS`; the message lists the valid ones."""


def hidden_tab_ids(names: Iterable[object]) -> tuple[str, ...]:
    """The tab ids named (case-insensitive, aliases accepted), in page order, each once.

    `UnknownTab` for a name that is no workspace tab, or one that cannot be hidden.
    """
    wanted: set[str] = set()
    for raw in names:
        if not isinstance(raw, str):
            raise UnknownTab(f"{raw!r} is not a tab name: expected one of {', '.join(HIDEABLE_TABS)}")
        name = raw.strip().lower()
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name in ALWAYS_SHOWN_TABS:
            raise UnknownTab(f"the {name} tab cannot be hidden: hide any of {', '.join(HIDEABLE_TABS)}")
        if name not in HIDEABLE_TABS:
            raise UnknownTab(f"unknown workspace tab {raw.strip()!r}: expected one of {', '.join(HIDEABLE_TABS)}")
        wanted.add(name)
    return tuple(tab for tab in HIDEABLE_TABS if tab in wanted)


def parse_hidden_tabs(raw: str) -> tuple[str, ...]:
    """A comma-separated list (`ATELIER_HIDDEN_TABS=img2img,pnginfo`) as tab ids; `UnknownTab` on a bad name."""
    return hidden_tab_ids(raw.split(","))
