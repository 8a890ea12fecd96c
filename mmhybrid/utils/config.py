"""Walking nested configs."""
from typing import Any, Iterator


def config_dicts(node: Any) -> Iterator[dict]:
    """Every dict in a nested config (``node`` itself first, then depth first through dict values and
    list/tuple items), for edits in place.

    Args:
        node: A config, or any part of one.
    """
    if isinstance(node, dict):
        yield node
        children = node.values()
    elif isinstance(node, (list, tuple)):
        children = node
    else:
        return
    for child in children:
        yield from config_dicts(child)
