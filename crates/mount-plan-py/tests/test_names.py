"""The name corpus of the Rust tests, through Python and through the CLI: the same answers."""

import json
import re
import subprocess

import pytest

import mount_plan
from conftest import REPO

NAME_CORPUS = REPO / "fuzz" / "corpus" / "name_bytes"
NAME_TABLE = REPO / "crates" / "mount-plan" / "tests" / "names.rs"

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


def rust_string_literals(path):
    """Every "..." literal of a Rust file, escapes decoded (\\n, \\0, \\u{..}, ...)."""
    src = path.read_text()
    out = []
    for m in re.finditer(r'(?<![\w\'])"((?:[^"\\]|\\.)*)"', src):
        body = m.group(1)
        body = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda u: chr(int(u.group(1), 16)), body)
        body = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), e.group(0)), body)
        out.append(body)
    return out


def corpus():
    """(label, bytes) of every name: the fuzz seed corpus and the Rust name table's literals."""
    names = [(f"fuzz:{p.name}", p.read_bytes()) for p in sorted(NAME_CORPUS.iterdir())]
    for i, lit in enumerate(rust_string_literals(NAME_TABLE)):
        names.append((f"names.rs:{i}", lit.encode()))
    # Long names the table builds with repeat().
    for n in (127, 128, 129, 300):
        names.append((f"repeat:{n}", b"a" * n))
    return names


CORPUS = corpus()


def cli_check(cli, names, *extra):
    """`mount-plan check --json` on `names`: one {name, ok, rule, error} per name."""
    stdin = "".join(json.dumps(n) + "\n" for n in names)
    out = subprocess.run([cli, "check", "--json", *extra], input=stdin, capture_output=True,
                         text=True)
    assert out.returncode in (0, 1), out.stderr
    # One object per "\n" (splitlines() would also split at U+2028 inside a name).
    return [json.loads(line) for line in out.stdout.split("\n") if line]


def python_check(name, layout=None):
    try:
        mount_plan.check_name(name, layout)
        return {"ok": True, "rule": None, "error": None}
    except mount_plan.PlanError as e:
        return {"ok": False, "rule": e.rule, "error": str(e), "value": e.value}


def test_corpus_is_large():
    assert len(list(NAME_CORPUS.iterdir())) >= 20
    assert len(CORPUS) > 60, len(CORPUS)


@pytest.mark.parametrize("extra", [(), ("--shared", "data", "--shared", "Models.v2"),
                                   ("--no-shared",)], ids=["default", "shared", "no-shared"])
def test_corpus_same_answers_as_cli(cli, extra):
    if extra == ():
        layout = None
    elif extra[0] == "--no-shared":
        layout = mount_plan.Layout(no_shared=True)
    else:
        layout = mount_plan.Layout(shared=["data", "Models.v2"])
    texts = [b.decode("utf-8", "replace") for _, b in CORPUS]
    answers = cli_check(cli, texts, *extra)
    assert len(answers) == len(texts)
    checked = 0
    for (label, raw), text, want in zip(CORPUS, texts, answers):
        assert want["name"] == text
        # Bytes are checked byte for byte; text that was valid UTF-8 also as str.
        inputs = [raw] + ([raw.decode()] if text.encode() == raw else [])
        for given in inputs:
            got = python_check(given, layout)
            assert got["ok"] == want["ok"], (label, given, got, want)
            assert got["rule"] == want["rule"], (label, given, got, want)
            if text.encode() == raw:
                assert got["error"] == want["error"], (label, given)
                if not got["ok"]:
                    assert got["value"] == text
            checked += 1
    assert checked > len(CORPUS)


def test_reserved_in_any_case():
    for name in ["Startup", "startup", "LOCAL", "sTaRtUp"]:
        with pytest.raises(mount_plan.PlanError) as e:
            mount_plan.check_name(name)
        assert e.value.rule == "reserved"
        assert e.value.value == name
        assert isinstance(e.value, ValueError)
        assert "`reserved`" in str(e.value)


def test_reference_launcher_weaknesses_are_refused():
    for name, rule in [("job1,source=/,readonly=false", "bad-char"), ("a:b", "bad-char"),
                       ("a=b", "bad-char"), ("a\nb", "bad-char"), ("a\\b", "bad-char"),
                       ("j\u043eb", "bad-char"), ("a" * 129, "too-long"), ("..", "bad-first-char"),
                       ("", "empty"), ("a.", "trailing-dot"), (b"a\xffb", "bad-char")]:
        with pytest.raises(mount_plan.PlanError) as e:
            mount_plan.check_name(name)
        assert e.value.rule == rule, name


def test_accepted_name_is_returned():
    assert mount_plan.check_name("job-1") == "job-1"
    assert mount_plan.check_name(b"train-2026.11") == "train-2026.11"
    assert mount_plan.check_name("startup", mount_plan.Layout(no_shared=True)) == "startup"


def test_wrong_type_is_a_type_error():
    with pytest.raises(TypeError):
        mount_plan.check_name(42)
