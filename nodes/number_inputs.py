"""What ComfyUI's own check of number inputs misses, checked when a node runs.

ComfyUI compares a widget's value with its min and max before a run, but every comparison with NaN is false, so
a JSON ``NaN`` in a saved or API workflow passes (a guard's ``min_identity`` of NaN switched its identity check
off); a value that arrives through a link (a primitive or math node) is never compared at all, so an INT input
can receive 2.5 or 10**9. Every node's FLOAT and INT inputs are therefore checked against the range the node
declares, and the message names the input.
"""

from __future__ import annotations

import functools
import inspect

from ..models.errors import checked_number

NUMBER_KINDS = ("FLOAT", "INT")


def number_inputs(cls) -> dict[str, tuple[str, dict]]:
    """{input name: (FLOAT or INT, its options)} of a node class."""
    declared = cls.INPUT_TYPES()
    found = {}
    for section in ("required", "optional"):
        for name, spec in declared.get(section, {}).items():
            if spec[0] in NUMBER_KINDS:
                found[name] = (spec[0], spec[1] if len(spec) > 1 else {})
    return found


def check_numbers(cls, values: dict) -> dict:
    """``values`` (a node's keyword inputs) with every FLOAT and INT input checked; with INPUT_IS_LIST each
    input is a list and every entry is checked."""
    as_lists = getattr(cls, "INPUT_IS_LIST", False)
    checked = dict(values)
    for name, (kind, options) in number_inputs(cls).items():
        value = values.get(name)
        if value is None:  # not connected: the function's default applies
            continue
        limits = dict(whole=kind == "INT", low=options.get("min"), high=options.get("max"))
        if as_lists and isinstance(value, list):
            checked[name] = [checked_number(name, v, **limits) for v in value]
        else:
            checked[name] = checked_number(name, value, **limits)
    return checked


def refuse_bad_numbers(cls):
    """Make ``cls``'s FUNCTION check its number inputs (:func:`check_numbers`) before it runs."""
    function = getattr(cls, cls.FUNCTION)
    if getattr(function, "checks_numbers", False):
        return cls
    signature = inspect.signature(function)

    @functools.wraps(function)
    def run(self, *args, **kwargs):
        named = {}  # ComfyUI passes keywords; scripts and tests may pass the first inputs by position
        for name, value in list(signature.bind_partial(self, *args, **kwargs).arguments.items())[1:]:
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            else:
                named[name] = value
        return function(self, **check_numbers(cls, named))

    run.checks_numbers = True
    setattr(cls, cls.FUNCTION, run)
    return cls
