"""A label -100 is torch's default ignore_index in an input read in chunks as in one read whole (inputs/labelled.py).

Every file form that streams (CSV, JSON Lines, .npy with a labels .npy, .safetensors) is checked whole and in
tiny chunks: the same verdict, settings, numbers and note ("K of N rows ignored"), K counted across the chunks.
The loss is also held to a hand computation: -log softmax(z)[y] summed over the rows not ignored (over their
count for the mean), in float64 from the same numbers; the two orders of summation differ by a few ulps of a
loss of order 1, far inside 1e-12.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_one_pipeline import check_summary, force_streaming

from gradcheck_cli import pipeline
from gradcheck_cli.inputs import labelled, tensors
from gradcheck_cli.inputs.gather import InputRequest
from gradcheck_cli.settings import Settings

ROWS, CLASSES = 13, 4
IGNORED_ROWS = [1, 6, 7, 12]  # the first chunk's, two in one chunk, and the last row


def _batch(minus_100_logit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    logits = rng.normal(scale=3.0, size=(ROWS, CLASSES))
    if minus_100_logit:
        logits[2, 1] = -100.5  # the text "-100" in a logit, no label -100
    labels = rng.integers(0, CLASSES, ROWS)
    if not minus_100_logit:
        labels[IGNORED_ROWS] = -100
    return logits, labels


def _write(directory: Path, form: str, logits: np.ndarray, labels: np.ndarray) -> list[str]:
    """The batch in one streaming form: the arguments after 'check'."""
    if form == "csv":
        lines = [",".join([*(f"z{c}" for c in range(CLASSES)), "label"])]
        lines += [",".join([*(repr(x) for x in row.tolist()), str(label)]) for row, label in zip(logits, labels, strict=True)]
        (directory / "b.csv").write_text("\n".join(lines) + "\n")
        return ["-i", str(directory / "b.csv")]
    if form == "jsonl":
        (directory / "b.jsonl").write_text("".join(json.dumps({"logits": row.tolist(), "label": int(label)}) + "\n"
                                                   for row, label in zip(logits, labels, strict=True)))
        return ["-i", str(directory / "b.jsonl")]
    if form == "npy":
        np.save(directory / "z.npy", logits)
        np.save(directory / "y.npy", labels)
        return ["-i", str(directory / "z.npy"), "--labels-file", str(directory / "y.npy")]
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="the tensors extra is not installed")
    safetensors_numpy.save_file({"logits": logits, "labels": labels}, str(directory / "b.safetensors"))
    return ["-i", str(directory / "b.safetensors")]


def _summary(document: dict) -> dict:
    return {"passed": document["passed"], "settings": document["settings"], "notes": document["notes"],
            "loss": document["loss"], "checks": [check_summary(check) for check in document["checks"]]}


def _hand_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log s_y per row, 0 on a row labelled -100 (MATH.md; torch's cross_entropy with ignore_index=-100)."""
    shifted = logits - logits.max(1, keepdims=True)
    log_s = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    kept = labels != -100
    return np.where(kept, -log_s[np.arange(ROWS), np.where(kept, labels, 0)], 0.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("form", ["csv", "jsonl", "npy", "safetensors"])
def test_minus_100_read_in_chunks_is_ignored_as_in_the_whole_read(gradcheck, monkeypatch, tmp_path, form, reduction):
    """Protects: a chunked input whose labels hold -100 was refused unless --ignore-index -100 was given; now it
    takes torch's default as the whole read does, with the same report, its note counting the rows of every chunk."""
    logits, labels = _batch()
    args = [*_write(tmp_path, form, logits, labels), "--reduction", reduction, "-f", "json"]
    whole = gradcheck("check", *args)
    force_streaming(monkeypatch)
    monkeypatch.setattr(tensors, "TENSOR_CHUNK_BYTES", 8 * CLASSES * 3)  # 3 rows a chunk
    chunked = gradcheck("check", *args)
    assert whole.exit_code == chunked.exit_code == 0, (whole, chunked)
    mine, theirs = json.loads(chunked.stdout), json.loads(whole.stdout)
    assert _summary(mine) == _summary(theirs)
    assert mine["settings"]["ignore_index"] == -100
    note = f"4 of {ROWS} rows ignored: their label is -100, torch's default ignore_index (--ignore-index changes it)"
    assert mine["notes"] == [note]
    hand = _hand_losses(logits, labels)
    expected = {"mean": hand.sum() / (ROWS - 4), "sum": hand.sum(), "none": hand}[reduction]
    assert np.allclose(mine["loss"], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("form", ["csv", "npy"])
def test_a_chunked_input_without_the_label_keeps_its_settings(gradcheck, monkeypatch, tmp_path, form):
    """Protects: with no row labelled -100 (the text "-100" only in a logit), a chunked input is checked as before:
    no ignore_index in the settings, no note, the report of the whole read."""
    logits, labels = _batch(minus_100_logit=True)
    args = [*_write(tmp_path, form, logits, labels), "-f", "json"]
    whole = gradcheck("check", *args)
    force_streaming(monkeypatch)
    chunked = gradcheck("check", *args)
    assert whole.exit_code == chunked.exit_code == 0, (whole, chunked)
    mine = json.loads(chunked.stdout)
    assert _summary(mine) == _summary(json.loads(whole.stdout))
    assert mine["settings"]["ignore_index"] is None and mine["notes"] == []


def test_the_rows_are_counted_across_chunks_and_the_chunks_read_with_the_label(tmp_path, monkeypatch):
    """Protects the count itself (pipeline.ignored_rows on a chunked input): 4 rows over chunks of a few rows, the
    bytes searched for "-100" in 3-byte blocks (every occurrence straddles one), and chunks that keep their -100
    labels (read with ignore_index -100) rather than refusing them."""
    monkeypatch.setattr(labelled, "_SCAN_BYTES", 3)
    logits, labels = _batch()
    _write(tmp_path, "csv", logits, labels)
    request = InputRequest(input_path=str(tmp_path / "b.csv"))
    with pipeline.open_check(request, Settings(reduction="sum"), chunk_bytes=300) as job:
        assert job.input.whole is None and job.settings.ignore_index == -100
        with job.input.reading() as batches:
            read = list(batches)
        assert len(read) > 2
        assert np.array_equal(np.concatenate([batch.labels for batch in read]), labels)
        report = job.run()
    assert report.passed and report.notes[0].startswith(f"4 of {ROWS} rows ignored")
