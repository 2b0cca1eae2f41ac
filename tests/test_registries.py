"""Each registry equals the command line's choice built from it, and holds behaviour: a new loss, input format
or output format is one module plus one registry line, and then works through the whole pipeline."""

from __future__ import annotations

import sys

import click
import numpy as np
import pytest

from gradcheck_cli import pipeline, settings
from gradcheck_cli.checks.runner import Keep
from gradcheck_cli.cli import main
from gradcheck_cli.inputs import FORMATS, InputFormat, reader
from gradcheck_cli.inputs.gather import InputRequest
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import LOSS_OPTIONS, LOSSES, loss_kind
from gradcheck_cli.render import RENDERERS, Renderer, renderer


def choices(command: str, option: str) -> tuple[str, ...]:
    group_context = click.Context(main)
    found = main.get_command(group_context, command)
    assert found is not None
    (parameter,) = [p for p in found.params if option in getattr(p, "opts", ())]
    assert isinstance(parameter.type, click.Choice)
    return tuple(parameter.type.choices)


def test_the_loss_choice_is_the_loss_registry():
    assert choices("check", "--loss") == tuple(LOSSES) == choices("sweep", "--loss") == choices("explain", "--loss")
    for name in LOSSES:
        kind = loss_kind(name)
        assert kind.name == name and set(kind.options) <= set(LOSS_OPTIONS)


def test_the_input_format_choice_is_the_format_registry():
    assert choices("check", "--input-format") == ("auto", *FORMATS)
    for name, spec in FORMATS.items():
        module = reader(name)
        assert callable(module.sniff) and callable(module.pieces), name
        assert all(suffix.startswith(".") for suffix in spec.suffixes)


def test_the_output_format_choice_is_the_renderer_registry():
    assert choices("check", "--format") == tuple(RENDERERS)
    assert set(choices("sweep", "--format")) <= set(RENDERERS)
    for name, spec in RENDERERS.items():
        module = renderer(name)
        assert callable(module.write), name
        assert hasattr(module, "rows_writer") == spec.streams_rows, name


def test_the_method_dtype_and_reduction_choices_are_the_settings_names():
    assert choices("check", "--method") == settings.METHOD_NAMES == differences.METHOD_NAMES
    assert choices("check", "--dtype") == settings.DTYPES
    assert choices("check", "--reduction") == settings.REDUCTIONS


@pytest.mark.parametrize(("suffix", "expected"), [(s, name) for name, spec in FORMATS.items() for s in spec.suffixes])
def test_a_file_name_ending_picks_its_format(tmp_path, suffix, expected):
    path = tmp_path / f"data{suffix}"
    path.write_text("whatever")
    from gradcheck_cli.inputs import source

    with source.open_source(str(path), "auto") as opened:
        assert opened.format == expected


NEW_LOSS = '''
"""A loss that is twice cross-entropy: one module, registered with one line."""
from dataclasses import replace

from gradcheck_cli.numerics.losses import cross_entropy
from gradcheck_cli.numerics.losses.base import LossKind


def build(batch, settings, dtype):
    loss = cross_entropy.build(batch, settings, dtype)
    return replace(loss, coefficients=2 * loss.coefficients)


KIND = LossKind("double_ce", (), build, cross_entropy.divisor_rows, cross_entropy.counts_rows, cross_entropy.explain)
'''

NEW_FORMAT = '''
"""Rows as 'z z z | label', one per line: one module, registered with one line."""
import numpy as np

from gradcheck_cli.inputs.validate import Parsed, line_answers


def sniff(head):
    return "|" in head.splitlines()[0]


def pieces(blocks, name):
    for first, text in blocks:
        lines = [line for line in text.split("\\n") if line.strip()]
        logits = np.array([[float(v) for v in line.split("|")[0].split()] for line in lines])
        labels = np.array([int(line.split("|")[1]) for line in lines])
        numbers = np.arange(first, first + len(lines))
        yield Parsed(logits, [line_answers(labels, True, name, name, numbers)], numbers)
'''

NEW_OUTPUT = '''
"""One line: the verdict as 'ok' or 'bad', and the loss: one module, registered with one line."""


def write(report, out, color, quiet):
    out.echo(f"{'ok' if report.passed else 'bad'} {report.loss!r}")
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("double_ce_loss", "bar_format", "terse_output"):
        sys.modules.pop(name, None)


def test_a_new_loss_is_one_module_and_one_registry_line(plugin_dir, monkeypatch):
    (plugin_dir / "double_ce_loss.py").write_text(NEW_LOSS)
    monkeypatch.setitem(LOSSES, "double_ce", ("double_ce_loss", "twice cross-entropy"))
    request = InputRequest(logits_args=("1.1,2.2,0.2,-1.7",), labels_arg="2")
    single = pipeline.check(request, settings.Settings())
    double = pipeline.check(request, settings.Settings(loss="double_ce"))
    assert double.passed and double.loss == 2 * single.loss
    assert np.array_equal(double.analytic_gradient, 2 * single.analytic_gradient)


def test_a_new_input_format_is_one_module_and_one_registry_line(plugin_dir, monkeypatch, tmp_path):
    (plugin_dir / "bar_format.py").write_text(NEW_FORMAT)
    monkeypatch.setitem(FORMATS, "bar", InputFormat("bar_format", (".bar",), streams=True, sniff_order=-1))
    path = tmp_path / "rows.bar"
    path.write_text("1.1 2.2 0.2 -1.7 | 2\n1 2 3 4 | 0\n")
    report = pipeline.check(InputRequest(input_path=str(path)), settings.Settings())
    same = pipeline.check(InputRequest(logits_args=("1.1,2.2,0.2,-1.7", "1,2,3,4"), labels_arg="2,0"),
                          settings.Settings())
    assert report.passed and report.loss == same.loss and report.line_of(1) == 2
    with pipeline.open_check(InputRequest(input_path=str(path)), settings.Settings(), chunk_bytes=8) as job:
        assert job.input.whole is None and job.run(Keep(arrays=False)).loss == same.loss  # it streams too


def test_a_new_output_format_is_one_module_and_one_registry_line(plugin_dir, monkeypatch, capsys):
    (plugin_dir / "terse_output.py").write_text(NEW_OUTPUT)
    monkeypatch.setitem(RENDERERS, "terse", Renderer("terse_output", "terse", arrays=False, jacobian_classes=0))
    from gradcheck_cli.terminal import Output

    report = pipeline.check(InputRequest(logits_args=("1,2,3",), labels_arg="0"), settings.Settings())
    renderer("terse").write(report, Output(), "never", False)
    assert capsys.readouterr().out == f"ok {report.loss!r}\n"


def test_check_help_names_every_output_format(gradcheck):
    run = gradcheck("check", "--help")
    for name, spec in RENDERERS.items():
        assert f"{name}: {spec.help}" in " ".join(run.stdout.split()), name
