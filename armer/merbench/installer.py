"""Register AttentionRobustV2 and its V1 baseline in a MERBench checkout, and undo it.

MERBench (zeroQiaoba/MERTools, folder MERBench) knows a model through `MODEL_MAP` (and the class
import) in toolkit/models/__init__.py, `MODEL_DATASET_MAP` in toolkit/data/__init__.py, a section
`name: {setting: [values]}` in toolkit/model-tune.yaml (main-release.py draws one value per list into
`args` wherever `args` holds None) and the argparse block of main-release.py. `EDITS` lists what install
adds to each of them, placed by parsing the file (`ast`, never line numbers); install also writes a shim
per model, toolkit/models/<name>.py, that imports the model from the `armer` package.

Each edit is whole lines between `# >>> armer-merbench` / `# <<< armer-merbench <<<` markers, so
stripping the blocks gives back the original bytes: uninstall is that strip (plus removing the shims),
install strips and re-applies (idempotent), and status/check compare the files with what install would
write. Every edited file is compiled (`compile()`) or read back (YAML) before anything is written. The
originals in `.armer-merbench/backup/` serve `uninstall --force` when the markers were damaged.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from armer.config import V2_ONLY, ModelConfig, flag_fields
from armer.constants import MODEL_CLASSES

try:
    import yaml  # PyYAML, which MERBench's OmegaConf needs; without it the YAML edit is not read back
except ImportError:
    yaml = None

BEGIN, END = "# >>> armer-merbench", "# <<< armer-merbench <<<"
SHIM_TAG, STATE_DIR = "# armer-merbench shim", ".armer-merbench"
MODELS_INIT, DATA_INIT, TUNE_YAML, MAIN = ("toolkit/models/__init__.py", "toolkit/data/__init__.py",
                                           "toolkit/model-tune.yaml", "main-release.py")
DEFAULT_MODELS = tuple(MODEL_CLASSES)
SHIMS = {f"toolkit/models/{name}.py": name for name in DEFAULT_MODELS}
# model-tune.yaml entries that MERBench's training loop reads: (value, help). The seed names no lr.
MERBENCH_ENTRIES = {"grad_clip": (-1.0, "MERBench: clip_grad_value_ bound (-1: no clipping)"),
                    "lr": (1e-3, "MERBench: Adam learning rate")}

def settings() -> list[tuple[str, object, str]]:
    """(name, default, help) of each model setting MERBench leaves to the model, as ModelConfig declares it
    (MERBench sets the data's dims itself and has its own --model and --feat_type)."""
    defaults = ModelConfig()
    return [(f.name, getattr(defaults, f.name), " ".join(f.metadata["help"].split()))
            for f in flag_fields(ModelConfig) if f.name not in ("model", "feat_type")]


def tune_values(name: str) -> dict[str, tuple[object, str]]:
    """The model-tune.yaml section of one model: setting -> (seed default, help)."""
    return {**{key: (value, help_text) for key, value, help_text in settings()
               if name == "attention_robust_v2" or key not in V2_ONLY}, **MERBENCH_ENTRIES}


class MERBenchError(Exception):
    """An install/uninstall that cannot go ahead; nothing was written."""


class NotMERBenchError(MERBenchError):
    """PATH is not a MERBench checkout."""


# --------------------------------------------------------------------------- marked blocks

def _lines(text: str) -> list[str]:
    """Lines with their own endings (\\n, \\r\\n or \\r), as Python's tokenizer counts them."""
    return io.StringIO(text, newline="").readlines()


def _insert(text: str, after: int, indent: str, body: list[str]) -> str:
    """A marked block of `body` lines after the first `after` lines, in the file's line ending. After a
    last line without an ending the block starts with one and ends without (strip_blocks relies on it)."""
    lines, nl = _lines(text), "\r\n" if "\r\n" in text else "\n"
    note = f"{BEGIN}: written by `python -m armer.merbench install`, removed by its `uninstall` >>>"
    block = "".join(f"{indent}{line}{nl}" if line else nl for line in [note, *body, END])
    if after and not lines[after - 1].endswith(("\n", "\r")):
        return text + nl + block[: -len(nl)]
    return "".join(lines[:after]) + block + "".join(lines[after:])


def strip_blocks(text: str, rel: str = "<text>") -> str:
    """`text` without the armer-merbench blocks: byte for byte the text before they were inserted."""
    out: list[str] = []
    opened = None
    for number, line in enumerate(_lines(text), start=1):
        marker = line.strip()
        if marker.startswith((BEGIN, END)):
            if (opened is None) != marker.startswith(BEGIN):
                raise MERBenchError(f"{rel}: unmatched armer-merbench marker at line {number}")
            if opened and out and not line.endswith(("\n", "\r")):  # appended to a last line that had no ending
                out[-1] = out[-1].rstrip("\r\n")
            opened = number if opened is None else None
        elif opened is None:
            out.append(line)
    if opened is not None:
        raise MERBenchError(f"{rel}: the armer-merbench block of line {opened} is never closed")
    return "".join(out)


# --------------------------------------------------------------------------- the edits

def _parse(text: str, rel: str, edited: bool = False) -> ast.Module:
    """The module's tree; an `edited` text must also compile (an earlier installer wrote an IndentationError)."""
    source = text.lstrip("\ufeff")
    try:
        if edited:
            compile(source, rel, "exec", dont_inherit=True)
        return ast.parse(source, filename=rel)
    except SyntaxError as error:  # IndentationError and TabError included
        where = f"{type(error).__name__}: {error.msg}, line {error.lineno}"
        raise MERBenchError(f"the edited {rel} would not compile ({where}); nothing was written. Please report "
                            f"this with your {rel}" if edited else f"{rel} is not valid Python ({where}); fix it first"
                            ) from error


def _indent(text: str, node: ast.stmt, rel: str) -> str:
    """The indentation of statement `node`, which must start its line (col_offset counts UTF-8 bytes)."""
    prefix = _lines(text)[node.lineno - 1].encode("utf-8")[: node.col_offset].decode("utf-8")
    if prefix.strip():
        raise MERBenchError(f"{rel}: line {node.lineno} holds more than one statement; split it")
    return prefix


def _imports(text: str, tree: ast.Module, rel: str, models: tuple[str, ...]):
    """The class imports, after the module's last top-level import."""
    last = max((n.end_lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))), default=0)
    return last, "", [f"from .{name} import {MODEL_CLASSES[name]}" for name in models]


def _registry(variable: str, values: dict[str, str]):
    """An edit that adds `models` to the dict literal `variable = {...}` with a `variable.update({...})`
    after it, whatever the literal's layout."""
    def edit(text: str, tree: ast.Module, rel: str, models: tuple[str, ...]):
        found = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Dict)
                 and any(isinstance(t, ast.Name) and t.id == variable for t in n.targets)]
        if len(found) != 1:
            raise MERBenchError(f"{rel}: expected one `{variable} = {{...}}`, found {len(found)}; this MERBench "
                                f"version is not supported")
        keys = {k.value: ast.unparse(v) for k, v in zip(found[0].value.keys, found[0].value.values)
                if isinstance(k, ast.Constant)}
        if taken := [name for name in models if name in keys]:
            others = ",".join(m for m in DEFAULT_MODELS if m != taken[0])
            raise MERBenchError(f"{rel} already registers a model named {taken[0]!r} ({keys[taken[0]]}), not "
                                f"through this installer. Remove it first, or install only the others with "
                                f"--models {others}")
        imported = {a.asname or a.name for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in n.names}
        if unknown := sorted({values[name] for name in models} - imported):
            raise MERBenchError(f"{rel} does not import {unknown[0]}; this MERBench version is not supported")
        items = ", ".join(f"{name!r}: {values[name]}" for name in models)
        return found[0].end_lineno, _indent(text, found[0], rel), [f"{variable}.update({{{items}}})"]
    return edit


def _tune(text: str, tree: None, rel: str, models: tuple[str, ...]):
    """A section per model at the end of model-tune.yaml: the seed defaults, one value each (no search)."""
    if taken := [name for name in models if name in re.findall(r"(?m)^([\w-]+)\s*:", text)]:
        raise MERBenchError(f"{rel} already has a section {taken[0]!r}, not written by this installer; remove it "
                            f"or choose --models")
    body: list[str] = []
    for name in models:
        body += [""] * bool(body) + [f"{name}:"] + [f"  {key}: [{json.dumps(value)}]" + (note and f"  # {note}")
                                                    for key, (value, note) in tune_values(name).items()]
    return len(_lines(text)), "", body


def _flags(text: str, tree: ast.Module, rel: str, models: tuple[str, ...]):
    """The settings' flags, default None (model-tune.yaml decides), before the script's `parse_args()`;
    None when the script has them all."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name)]
    if len(parse := [n for n in calls if n.func.attr == "parse_args"]) != 1:
        raise MERBenchError(f"{rel}: expected one argparse `parse_args()` call, found {len(parse)}; this MERBench "
                            f"version is not supported")
    parser = parse[0].func.value.id
    options = {a.value for n in calls if n.func.attr == "add_argument" and n.func.value.id == parser for a in n.args
               if isinstance(a, ast.Constant)}
    if not (missing := [setting for setting in settings() if f"--{setting[0]}" not in options]):
        return None
    statement = max((n for n in ast.walk(tree) if isinstance(n, ast.stmt) and n.lineno <= parse[0].lineno
                     and n.end_lineno >= parse[0].end_lineno), key=lambda n: n.lineno)
    body = ["def _armer_bool(value):  # true/false, yes/no, y/n, 1/0",
            "    return ('0', 'false', 'no', 'n', '1', 'true', 'yes', 'y').index(str(value).lower()) > 3",
            ] if any(isinstance(value, bool) for _, value, _ in missing) else []
    for key, value, help_text in missing:
        spec = "type=_armer_bool, nargs='?', const=True" if isinstance(value, bool) else f"type={type(value).__name__}"
        scope = "AttentionRobustV2" if key in V2_ONLY else "attention_robust(_v2)"
        full_help = f"{scope}: {help_text or key}".replace("%", "%%")  # argparse formats help with %
        body.append(f"{parser}.add_argument('--{key}', {spec}, default=None, help={full_help!r})")
        if isinstance(value, bool) and f"--no-{key}" not in options:  # the spelling armer.train uses
            body.append(f"{parser}.add_argument('--no-{key}', dest='{key}', action='store_const', const=False, "
                        f"help='same as --{key} false')")
    return statement.lineno - 1, _indent(text, statement, rel), body


# file -> its edits, applied in this order: edit(text, tree, rel, models) -> (after line, indent, lines) or None
EDITS = {MODELS_INIT: (_imports, _registry("MODEL_MAP", MODEL_CLASSES)),
         DATA_INIT: (_registry("MODEL_DATASET_MAP", dict.fromkeys(MODEL_CLASSES, "Data_Feat")),),
         TUNE_YAML: (_tune,),
         MAIN: (_flags,)}


def shim_source(name: str) -> str:
    """toolkit/models/<name>.py: the model from the installed armer package."""
    return f'''{SHIM_TAG}: written by `python -m armer.merbench install`; removed by `... uninstall`.
"""MERBench model `{name}`: {MODEL_CLASSES[name]} from the armer package (`pip install /path/to/ARMER`)."""
try:
    from armer.merbench.adapter import {MODEL_CLASSES[name]}
except ImportError as _error:  # keep MERBench's other models usable without armer
    def {MODEL_CLASSES[name]}(args, _error=_error):
        raise ImportError(f"model '{name}' needs the armer package in this Python environment: pip install "
                          f"/path/to/ARMER (import failed: {{_error}})") from _error
'''


# --------------------------------------------------------------------------- plan, write, commands

@dataclass
class Edit:
    """One file's text before and after (None: absent)."""
    rel: str
    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        lines = difflib.unified_diff(_lines(self.before or ""), _lines(self.after or ""),
                                     "/dev/null" if self.before is None else f"a/{self.rel}",
                                     "/dev/null" if self.after is None else f"b/{self.rel}")
        return "".join(line if line.endswith(("\n", "\r")) else line + "\n" for line in lines)


@dataclass
class Result:
    root: Path
    edits: list[Edit]
    messages: list[str]

    @property
    def changed(self) -> list[str]:
        return [edit.rel for edit in self.edits if edit.changed]


def _read(path: Path) -> str | None:
    return path.read_bytes().decode("utf-8") if path.is_file() else None


def _read_back(rel: str, original: str, after: str, models: tuple[str, ...]) -> None:
    """Raise unless `after` is `original` plus the blocks and reads as intended."""
    if strip_blocks(after, rel) != original:
        raise MERBenchError(f"{rel}: the edit changed lines outside its blocks; nothing was written")
    if rel.endswith(".py"):
        _parse(after, rel, edited=True)
    elif yaml is not None:
        sections = {name: {key: [value] for key, (value, _) in tune_values(name).items()} for name in models}
        try:
            if yaml.safe_load(after) != {**(yaml.safe_load(original) or {}), **sections}:
                raise MERBenchError(f"{rel} does not read back as intended after the edit; nothing was written")
        except yaml.YAMLError as error:
            raise MERBenchError(f"{rel} is not valid YAML ({error}); nothing was written") from error


def _plan(root: Path, models: tuple[str, ...], force: bool = False) -> list[Edit]:
    """Every file that install of `models` (uninstall: none) would write, before and after, read back;
    raises before anything is written. `force`: a file with damaged blocks gets its backup back."""
    edits = []
    for rel, editors in EDITS.items():
        if (before := _read(root / rel)) is None:
            continue
        try:
            original = after = strip_blocks(before, rel)
        except MERBenchError as error:
            backup = _read(root / STATE_DIR / "backup" / rel)
            if models or not force or backup is None:
                fix = (f"`uninstall --force` restores the original from {STATE_DIR}/backup, keeping yours as "
                       f"{rel}.armer-modified" if backup is not None else "mend the markers by hand")
                raise MERBenchError(f"{error}. Nothing was written; {fix}") from error
            edits += [Edit(f"{rel}.armer-modified", None, before), Edit(rel, before, backup)]
            continue
        for editor in editors if models else ():
            tree = _parse(after, rel, edited=after != original) if rel.endswith(".py") else None
            if found := editor(after, tree, rel, models):
                after = _insert(after, *found)
        _read_back(rel, original, after, models)
        edits.append(Edit(rel, before, after))
    for rel, name in SHIMS.items():
        before = _read(root / rel)
        if before is None or before.startswith(SHIM_TAG):  # ours: written, kept or removed
            edits.append(Edit(rel, before, shim_source(name) if name in models else None))
        elif name in models:
            raise MERBenchError(f"{rel} exists and was not written by this installer; move it away first, or "
                                f"install only the others with --models")
    return edits


def _write(root: Path, edits: Iterable[Edit]) -> None:
    for edit in edits:
        path = root / edit.rel
        if edit.after is None:
            path.unlink(missing_ok=True)
            for compiled in path.parent.glob(f"__pycache__/{path.stem}.*.pyc"):  # what MERBench's import left
                compiled.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.armer-tmp")
        tmp.write_bytes(edit.after.encode("utf-8"))
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)  # a file holds the old or the new text, never part of one


def _locate(path: str | os.PathLike) -> Path:
    root = Path(path).expanduser().resolve()
    missing = [rel for rel in EDITS if not (root / rel).is_file()]
    if missing:
        hint = f" Did you mean {root / 'MERBench'}?" if (root / "MERBench" / "toolkit").is_dir() else ""
        where = f"missing {', '.join(missing)}" if root.is_dir() else "the folder does not exist"
        raise NotMERBenchError(f"{root} is not a MERBench checkout ({where}). Pass the MERBench folder of "
                               f"zeroQiaoba/MERTools (the one with main-release.py and toolkit/).{hint}")
    return root


def _models(models: Iterable[str] | str | None) -> tuple[str, ...]:
    names = models.split(",") if isinstance(models, str) else models or DEFAULT_MODELS
    chosen = {name.strip() for name in names if name.strip()}
    if not chosen or chosen - set(MODEL_CLASSES):
        raise MERBenchError(f"unknown model(s) {sorted(chosen - set(MODEL_CLASSES))}; choose from "
                            f"{', '.join(DEFAULT_MODELS)}")
    return tuple(m for m in DEFAULT_MODELS if m in chosen)


def _manifest(root: Path) -> dict | None:
    path = root / STATE_DIR / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _dry_run(root: Path, edits: list[Edit]) -> Result:
    return Result(root, edits, [f"dry run: {sum(e.changed for e in edits) or 'no'} file(s) would change in {root}"])


def install(path: str | os.PathLike, models: Iterable[str] | str | None = None, dry_run: bool = False) -> Result:
    """Register the models in the MERBench checkout at `path` (see the module docstring)."""
    models = _models(models)
    root = _locate(path)
    edits = _plan(root, models)
    changed = [edit for edit in edits if edit.changed]
    if dry_run:
        return _dry_run(root, edits)
    if not changed:
        return Result(root, edits, [f"{', '.join(models)} already installed in {root}; nothing changed"])
    try:
        armer_version = version("armer")
    except PackageNotFoundError:  # running from a source tree
        armer_version = "source"
    # The backups: the files without our blocks (the originals, or the user's latest versions).
    state = [Edit(f"{STATE_DIR}/backup/{e.rel}", None, strip_blocks(e.after, e.rel)) for e in changed if e.rel in EDITS]
    state.append(Edit(f"{STATE_DIR}/manifest.json", None, json.dumps({"models": models, "version": armer_version})))
    _write(root, state + changed)
    done = ", ".join(e.rel for e in changed)
    return Result(root, edits, [f"installed {', '.join(models)} into {root}: changed {done}",
                                f"undo: python -m armer.merbench uninstall {root}"])


def uninstall(path: str | os.PathLike, dry_run: bool = False, force: bool = False) -> Result:
    """Undo `install`: its blocks, the shims and their compiled files, and the state folder removed."""
    root = _locate(path)
    state = root / STATE_DIR
    edits = _plan(root, (), force)
    if dry_run:
        return _dry_run(root, edits)
    changed = [edit for edit in edits if edit.changed]
    messages = [f"{e.rel} was changed after install: removed the armer blocks and kept your other changes"
                for e in changed if e.rel in EDITS and _read(state / "backup" / e.rel) not in (None, e.after)]
    messages += [f"{e.rel[: -len('.armer-modified')]}: restored the original; your changed version is {e.rel}"
                 for e in changed if e.rel.endswith(".armer-modified")]
    if not changed and not state.is_dir():
        return Result(root, edits, [f"nothing of armer is installed in {root}"])
    _write(root, changed)
    shutil.rmtree(state, ignore_errors=True)
    done = ", ".join(e.rel for e in changed) or "no file needed changing"
    return Result(root, edits, messages + [f"uninstalled from {root}: {done}"])


def status(path: str | os.PathLike) -> list[str]:
    """What is installed and whether each file is as install leaves it (and otherwise as backed up)."""
    root = _locate(path)
    if (manifest := _manifest(root)) is None:
        return [f"armer is not installed in {root}"]
    lines = [f"installed in {root}: {', '.join(manifest['models'])} (armer {manifest.get('version')})"]
    try:
        edits = _plan(root, _models(manifest["models"]))
    except MERBenchError as error:
        return lines + [f"  problem: {error}"]
    for edit in (e for e in edits if e.after is not None):
        backup = _read(root / STATE_DIR / "backup" / edit.rel)
        same = not edit.changed and backup in (None, strip_blocks(edit.after, edit.rel))
        lines.append(f"  {edit.rel}: {'as installed' if same else 'CHANGED since install'}")
    return lines


CHECK_SCRIPT = r"""
import argparse, sys
sys.path.insert(0, '.')
import torch
from toolkit.models import get_models
for name in sys.argv[1:]:
    args = argparse.Namespace(model=name, audio_dim=8, text_dim=12, video_dim=6, output_dim1=6, output_dim2=1,
                              feat_type='utt', hidden_dim=16, dropout=0.1, grad_clip=-1.0, num_attention_heads=4)
    model = get_models(args).train()
    batch = {'audios': torch.randn(4, 8), 'texts': torch.randn(4, 12), 'videos': torch.randn(4, 6)}
    batch['videos'][0] = 0  # a missing modality, as MERBench fills it
    features, emos_out, vals_out, interloss = model(batch)
    (emos_out.sum() + vals_out.sum() + interloss).backward()
    assert emos_out.shape == (4, 6) and vals_out.shape == (4, 1) and model.model.grad_clip == -1
    print('ok', name, type(model.model).__name__)
"""


def check(path: str | os.PathLike, models: Iterable[str] | str | None = None, timeout: float = 300) -> list[str]:
    """Import the models the way MERBench does (a fresh interpreter in the checkout) and run one step."""
    root = _locate(path)
    installed = _models((_manifest(root) or {}).get("models"))
    if stale := [edit.rel for edit in _plan(root, installed) if edit.changed]:
        raise MERBenchError(f"the MERBench files are not as install leaves them: {', '.join(stale)} (run install)")
    run = subprocess.run([sys.executable, "-c", CHECK_SCRIPT, *(installed if models is None else _models(models))],
                         cwd=root, capture_output=True, text=True, timeout=timeout, check=False)
    if run.returncode != 0:
        raise MERBenchError(f"importing the models from MERBench failed (in {root}, {sys.executable}):\n"
                            + (run.stderr.strip() or run.stdout.strip())[-3000:])
    return [line for line in run.stdout.splitlines() if line.startswith("ok")]


def main(argv: list[str] | None = None) -> int:
    """`armer-merbench` / `python -m armer.merbench`. Exit 0: done, 1: installed but the import check failed,
    2: refused (nothing written)."""
    parser = argparse.ArgumentParser(prog="python -m armer.merbench", description=(
        "Register AttentionRobustV2 (attention_robust_v2) and its V1 baseline (attention_robust) in a MERBench "
        "checkout, so that `main-release.py --model attention_robust_v2` trains it."))
    commands = parser.add_subparsers(dest="command", required=True)
    sub = {name: commands.add_parser(name, help=text) for name, text in [
        ("install", "edit MERBench to register the models (backups kept)"), ("uninstall", "undo install"),
        ("status", "what is installed and whether the files still match"),
        ("check", "import the models from MERBench and run one training step")]}
    for name, subparser in sub.items():
        subparser.add_argument("path", help="the MERBench folder (with main-release.py and toolkit/)")
        if name in ("install", "uninstall"):
            subparser.add_argument("--dry-run", action="store_true", help="print the edits as a diff; write nothing")
    sub["install"].add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated subset")
    sub["install"].add_argument("--no-check", action="store_true", help="skip importing the models afterwards")
    sub["uninstall"].add_argument("--force", action="store_true", help="restore the backup of a damaged file")
    args = parser.parse_args(argv)
    try:
        if args.command in ("status", "check"):
            print("\n".join(status(args.path) if args.command == "status" else check(args.path)))
            return 0
        result = (install(args.path, args.models, dry_run=args.dry_run) if args.command == "install"
                  else uninstall(args.path, dry_run=args.dry_run, force=args.force))
        if args.dry_run:
            sys.stdout.write("".join(edit.diff() for edit in result.edits if edit.changed))
        print("\n".join(result.messages))
        if args.command == "install" and not (args.dry_run or args.no_check):
            try:
                print("\n".join(check(result.root, args.models)))
            except (MERBenchError, subprocess.TimeoutExpired) as error:
                print(f"error: installed, but the import check failed (is armer installed in this Python?): {error}\n"
                      f"Fix it and run `python -m armer.merbench check {result.root}`, or undo with `... uninstall`.",
                      file=sys.stderr)
                return 1
    except MERBenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
