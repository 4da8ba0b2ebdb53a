"""Typed lists (the Preset node's expressions, labels) are cut by one rule: Python's split_list and the browser's
splitList (js/expression_list.js, run under Node.js) give the same items for the same text, and a click in the
Preset node's gallery adds or removes a name in a list typed with any separator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from genaffect.models.expression.batch import split_list

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = "file://" + os.path.join(REPO, "js", "expression_list.js")

TRICKY = [
    "happy; sad", "happy;sad\nangry,", " a , b ;; c \n\n", "", ",;\n, ;", "a,,b", "\tx\r\ny\r", "one\rtwo",
    "smile 0.5; frown 0.2", "a\u00a0,\u00a0b", "\u3000joy\u3000;\u2003calm", "\x1cfile\x1f; \x85next\x85",
    "\ufeffbom; zero\u200bwidth", "line\u2028break\u2029para", "ünïcödé; 表情, 😀;😢", "  \t  ", "x ; ; y",
]


def node(script: str, payload) -> object:
    result = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(payload),
                            capture_output=True, text=True, timeout=60, encoding="utf-8")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (apt-get install nodejs)")


@needs_node
def test_the_browser_cuts_typed_lists_exactly_as_python_does():
    script = (f"import {{ splitList }} from {json.dumps(MODULE)};\n"
              "import { readFileSync } from 'node:fs';\n"
              "const texts = JSON.parse(readFileSync(0, 'utf8'));\n"
              "console.log(JSON.stringify(texts.map(splitList)));\n")
    browser = node(script, TRICKY)
    for text, items in zip(TRICKY, browser):
        assert items == split_list(text), repr(text)
    assert split_list("happy; sad") == ["happy", "sad"]  # the separators both sides accept


@needs_node
def test_a_gallery_click_adds_or_removes_a_name_whatever_separated_the_typed_list():
    cases = [("happy; sad", "sad", ["happy"]), ("happy; sad", "angry", ["happy", "sad", "angry"]),
             ("happy\nsad", "happy", ["sad"]), ("", "sad", ["sad"]), (" sad ;", "sad", [])]
    script = (f"import {{ toggleItem }} from {json.dumps(MODULE)};\n"
              "import { readFileSync } from 'node:fs';\n"
              "const cases = JSON.parse(readFileSync(0, 'utf8'));\n"
              "console.log(JSON.stringify(cases.map(([text, name]) => toggleItem(text, name))));\n")
    written = node(script, [[text, name] for text, name, _ in cases])
    assert written[0] == "happy"  # not "happy; sad, sad"
    for (text, name, expected), result in zip(cases, written):
        assert split_list(result) == expected, (text, name, result)
