"""`fewbit.errors.shown`: what a message may echo of text a user gave (a name, a path, a value)."""

from __future__ import annotations

import os

from fewbit.errors import shown


def test_long_text_is_cut_in_the_middle_to_the_limit() -> None:
    text = "head-" + "x" * 100_000 + "-tail"
    out = shown(text)
    assert len(out) == 80 and out.startswith("head-") and out.endswith("-tail") and "..." in out
    assert len(shown(text, limit=20)) == 20
    assert shown(text, limit=None) == text
    assert shown("short") == "short"


def test_terminal_control_is_removed_or_escaped() -> None:
    assert shown("a\x1b[31mred\x1b[0m") == "ared"  # colour sequences go
    assert shown("a\x1b]0;title\x07b") == "ab"  # so does a window-title sequence
    assert shown("one\ntwo\rthree\x00") == "one\\ntwo\\rthree\\x00"  # one line, nothing hidden
    assert shown("evil\u202etxt.exe") == "evil\\u202etxt.exe"  # a bidi override is shown, not obeyed
    assert shown("\x9b2J") == "\\x9b2J"  # the 8-bit CSI
    assert shown("ünïcödé 字") == "ünïcödé 字"  # printable text stays as it is


def test_undecodable_bytes_of_a_file_name_are_written_as_hex() -> None:
    name = os.fsdecode(b"caf\xe9-\xff.png")  # not UTF-8 on disk: surrogate-escaped by Python
    out = shown(name)
    assert out == "caf\\xe9-\\xff.png"
    out.encode("utf-8")  # encodes in any strict UTF-8 stream


def test_a_non_string_is_shown_as_its_str() -> None:
    assert shown(12345) == "12345" and shown(None) == "None"
