"""`--help` in sections, as ruff and pytest show theirs: a command's options grouped by what they say (where the
data is, your values or code, the loss, the differences and tolerances, the output), with click's own formatter.

Keyed on each option's parameter name, so the option bundles (options.py) need no marker; an option named in
no section is still shown, under "Other options", and tests/test_reading.py holds every option of the commands
that use this class to a section.
"""

from __future__ import annotations

from typing import Any

import click

SECTIONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("Input", frozenset({"logits_args", "labels_arg", "targets_args", "input_path", "input_format", "labels_path",
                         "targets_path", "key_names", "teacher_logits_args", "teacher_path", "row"})),
    ("Your values or code to check", frozenset({"gradient_path", "probabilities_path", "loss_value", "impl",
                                                "impl_timeout", "framework", "device", "grad_output", "seed",
                                                "directions"})),
    ("Loss", frozenset({"loss", "reduction", "weights", "label_smoothing", "ignore_index", "temperature", "beta",
                        "t2_scaling", "z_loss", "softcap", "logit_scale", "pos_weight", "gamma", "alpha"})),
    ("Differences and tolerances", frozenset({"method", "eps", "eps_values", "atol", "rtol", "dtype", "order"})),
    ("Output", frozenset({"output_format", "full", "color", "no_color", "quiet", "verbose", "help"})),
)
OTHER = "Other options"
_COLUMN = 30  # click's default col_max: a longer option goes on a line of its own, its help under it


def section_of(name: str | None) -> str:
    return next((title for title, names in SECTIONS if name in names), OTHER)


class SectionedCommand(click.Command):
    """A click command whose --help lists its options in SECTIONS, in that order, aligned as one table."""

    def make_parser(self, ctx: click.Context) -> Any:
        """click's parser, with the short options (-i, -f, -q, -v) also in its table of long ones.

        click looks every option up as a long one first; a short one missing there makes click build "did you
        mean" suggestions with difflib (loading it: a percent of a one-row check's start-up) before it finds
        the option among the short ones. Found at once instead, `-i FILE` reads FILE as before, and `-i=FILE`
        reads FILE as `--input=FILE` does; bundled flags (-qv) and attached values (-iFILE) still miss the
        long table and take click's short way. Without those tables (another click), nothing changes.
        """
        parser = super().make_parser(ctx)
        long_options, short_options = getattr(parser, "_long_opt", None), getattr(parser, "_short_opt", None)
        if isinstance(long_options, dict) and isinstance(short_options, dict):
            long_options.update(short_options)
        return parser

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and isinstance(param, click.Option):
                help_option = bool(set(param.opts) & set(ctx.help_option_names))  # click's own name for it varies
                sections.setdefault("Output" if help_option else section_of(param.name), []).append(record)
        # click sizes the first column per call of write_dl; padding each section's first term to the widest
        # term that fits the column (30) lines every section up with the others.
        width = min(max((len(term) for rows in sections.values() for term, _ in rows), default=0), _COLUMN)
        for title in [*(title for title, _ in SECTIONS), OTHER]:
            rows = sections.get(title)
            if rows:
                with formatter.section(title):
                    formatter.write_dl([(rows[0][0].ljust(width), rows[0][1]), *rows[1:]], col_max=_COLUMN)
