"""The models shipped in models/ load offline and produce sane output (content checks, not
fixed strings)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from convtrans.translator import Translator, default_model

pytestmark = pytest.mark.integration

# German caption -> English words a correct translation must contain (any one of them)
PROBES = [
    ("Ein Mann fährt Fahrrad.", {"man"}, {"bike", "bicycle", "cycling", "riding"}),
    ("Zwei Hunde spielen im Schnee.", {"dogs"}, {"snow"}),
    ("Eine Frau sitzt auf einer Bank.", {"woman", "lady"}, {"bench"}),
    ("Kinder spielen am Strand.", {"children", "kids"}, {"beach"}),
    ("Ein Mädchen in einem roten Kleid läuft über die Straße.", {"girl"}, {"red"}),
]


def test_default_translator_gives_sane_english() -> None:
    translator = Translator(default_model("translate"), device="cpu")
    outputs = [r.text for r in translator.translate_batch([p[0] for p in PROBES])]
    hits = 0
    for (source, first, second), output in zip(PROBES, outputs):
        words = {w.strip(".,!?").lower() for w in output.split()}
        assert output and output.isascii() and len(words) >= 3, (source, output)
        hits += bool(words & first) and bool(words & second)
    assert hits >= 4, outputs


def test_main_job_command_works_offline() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "no_proxy": "*", "http_proxy": "http://0.0.0.0:9", "https_proxy": "http://0.0.0.0:9"}
    result = subprocess.run([sys.executable, "-m", "convtrans", "translate"], input="Ein Mann fährt Fahrrad.\n",
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "man" in result.stdout.lower() and result.stdout.count("\n") == 1
