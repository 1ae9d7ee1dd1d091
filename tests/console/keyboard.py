"""Keyboard navigation in the console's browser tests: what an officer without a mouse does."""


def tab_to(page, accessible_name: str, limit: int = 150) -> None:
    """Move focus with the Tab key only, until the control with this name has it."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        name = page.evaluate("() => document.activeElement.getAttribute('aria-label') || "
                             "document.activeElement.textContent.trim()")
        if name == accessible_name:
            return
    raise AssertionError(f"Tab never reached {accessible_name!r}")
