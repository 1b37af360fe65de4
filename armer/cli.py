"""Command-line flags derived from the settings dataclasses of `armer.config`, their Markdown list, logging.

Every flag-field of `ModelConfig` / `TrainConfig` is a flag of the same name (MERBench's names):
its type, default, choices and help come from the field. A switch that is on by default can be
turned off (`--use_vae` / `--no-use_vae`); one that is off by default is a plain `--test_every_epoch`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, TypeVar

from armer.config import ModelConfig, TrainConfig, choices_of, flag_fields

Settings = TypeVar("Settings")

SETTINGS_DOC = Path("docs") / "settings.md"  # relative to the repository root


def _flag_names(f: Field) -> str:
    return f"--{f.name} / --no-{f.name}" if f.default is True else f"--{f.name}"


def add_settings(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type) -> None:
    """One flag per flag-field of the settings dataclass `cls`."""
    for f in flag_fields(cls):
        help_text = f.metadata["help"].replace("%", "%%") + " (default: %(default)s)"
        if f.default is True:
            parser.add_argument(f"--{f.name}", default=True, action=argparse.BooleanOptionalAction, help=help_text)
        elif f.default is False:
            parser.add_argument(f"--{f.name}", action="store_true", help=help_text)
        else:
            parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default, choices=choices_of(f),
                                help=help_text)


def settings_from_args(cls: type[Settings], args: argparse.Namespace, **from_data: Any) -> Settings:
    """`cls` from the flags `add_settings(parser, cls)` parsed into `args`; `from_data`: the fields that are no flags."""
    return cls(**{f.name: getattr(args, f.name) for f in flag_fields(cls)}, **from_data)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def _table(cls: type) -> list[str]:
    rows = ["| flag | default | help |", "|---|---|---|"]
    for f in flag_fields(cls):
        choices = choices_of(f)
        help_text = f.metadata["help"] + (f" (one of: {', '.join(choices)})" if choices else "")
        rows.append(f"| `{_flag_names(f)}` | `{f.default}` | {_cell(help_text)} |")
    return rows


def settings_markdown() -> str:
    """The flags of `python -m armer.train` from the settings dataclasses, as `docs/settings.md` holds them."""
    from_data = [f for f in fields(ModelConfig) if f.metadata["from_data"]]
    lines = [
        "# Settings",
        "",
        "[README](../README.md) · [model](model.md) · [training](training.md)",
        "",
        "Generated from the dataclasses in `armer/config.py` by `python scripts/settings_doc.py`; do not edit",
        "(`tests/test_cli.py` checks that this file is up to date). The data flags (`--features_root`,",
        "`--label_path`, `--save_root`, `--audio_feature`, ...) are in `python -m armer.train --help`.",
        "",
        "## Training (`TrainConfig`)",
        "",
        *_table(TrainConfig),
        "",
        "## Model (`ModelConfig`, stored in each checkpoint's `config.json`)",
        "",
        *_table(ModelConfig),
        "",
        "Set from the data, not by flags: " + "; ".join(f"`{f.name}` ({f.metadata['help']})" for f in from_data) + ".",
    ]
    return "\n".join(lines) + "\n"


def setup_logging(log_file: Path | None = None) -> None:
    """INFO to stderr (and to `log_file` when given), one line per message."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=handlers, force=True)
