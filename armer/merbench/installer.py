"""Register AttentionRobustV2 and its V1 baseline in a MERBench checkout, and undo it.

MERBench (zeroQiaoba/MERTools, folder MERBench) knows a model through `MODEL_MAP` (and the class
import) in toolkit/models/__init__.py, `MODEL_DATASET_MAP` in toolkit/data/__init__.py, a section
`name: {setting: [values]}` in toolkit/model-tune.yaml (main-release.py draws one value per list into
`args` wherever `args` holds None) and the argparse block of main*.py; install edits all four and
adds a shim per model, toolkit/models/<name>.py, that imports the model from the `armer` package.

The structures are found with `ast`, never by line numbers. Each edit inserts whole lines between
`# >>> armer-merbench` / `# <<< armer-merbench <<<` markers, so removing the blocks gives back the
original bytes. Every edited file is compiled (`compile()`) or parsed (YAML) and checked before
anything is written. install strips its blocks and re-applies them (idempotent); uninstall removes
them, keeping any other change; the originals in `.armer-merbench/backup/` serve `--force`.
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
from dataclasses import dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from armer.config import ModelConfig
from armer.constants import MODEL_CLASSES

BEGIN, END = "# >>> armer-merbench", "# <<< armer-merbench <<<"
SHIM_TAG = "# armer-merbench shim"
STATE_DIR = ".armer-merbench"
MODELS_INIT, DATA_INIT, TUNE_YAML = "toolkit/models/__init__.py", "toolkit/data/__init__.py", "toolkit/model-tune.yaml"
DEFAULT_MODELS = tuple(MODEL_CLASSES)
SHIMS = {f"toolkit/models/{name}.py": name for name in DEFAULT_MODELS}
# file -> (the dict literal that registers a model, model -> its value there)
MAPS = {MODELS_INIT: ("MODEL_MAP", MODEL_CLASSES),
        DATA_INIT: ("MODEL_DATASET_MAP", dict.fromkeys(MODEL_CLASSES, "Data_Feat"))}
# model-tune.yaml entries that MERBench's training loop reads: (value, help). The seed names no lr.
MERBENCH_ENTRIES = {"grad_clip": (-1.0, "MERBench: clip_grad_value_ bound (-1: no clipping)"),
                    "lr": (1e-3, "MERBench: Adam learning rate")}
# ModelConfig fields that MERBench sets on `args` itself, from the data or its own flags.
_SET_BY_MERBENCH = {"model", "audio_dim", "text_dim", "video_dim", "feat_type", "output_dim1", "output_dim2",
                    "grad_clip"}
# Settings only V2 reads; every other one (present or future) applies to both models.
_V2_ONLY = {"use_vae", "kl_weight", "recon_weight", "cross_kl_weight", "use_proxy_attention",
            "fusion_temperature", "num_attention_heads", "calibration_weight"}


def settings() -> list[tuple[str, object, str]]:
    """(name, default, help) of each model setting MERBench leaves to the model, as ModelConfig declares it."""
    defaults = ModelConfig()
    return [(f.name, getattr(defaults, f.name), " ".join(str(f.metadata.get("help", "")).split()))
            for f in fields(ModelConfig) if f.name not in _SET_BY_MERBENCH]


class MERBenchError(Exception):
    """An install/uninstall that cannot go ahead; nothing was written."""


class NotMERBenchError(MERBenchError):
    """PATH is not a MERBench checkout."""


def _lines(text: str) -> list[str]:
    """Lines with their own endings (\\n, \\r\\n or \\r), as Python's tokenizer counts them."""
    return io.StringIO(text, newline="").readlines()


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _starts_line(lines: list[str], node: ast.AST) -> bool:
    """Whether only whitespace precedes `node` on its line (ast's col_offset counts UTF-8 bytes)."""
    line = lines[node.lineno - 1].encode("utf-8")
    return not line[: node.col_offset].strip()


def _insert(text: str, after: int, indent: str, note: str, body: list[str]) -> str:
    """A marked block of `body` lines after the first `after` lines, in the file's line ending. After a
    last line without an ending the block starts with one and ends without (strip_blocks relies on it)."""
    lines, nl = _lines(text), "\r\n" if "\r\n" in text else "\n"
    block = [f"{indent}{line}" if line else "" for line in [f"{BEGIN}: {note} >>>", *body, END]]
    if after and not lines[after - 1].endswith(("\n", "\r")):
        return text + "".join(nl + line for line in block)
    return "".join(lines[:after] + [line + nl for line in block] + lines[after:])


def strip_blocks(text: str, rel: str = "<text>") -> str:
    """`text` without the armer-merbench blocks: byte for byte the text before they were inserted."""
    out: list[str] = []
    opened = None
    for number, line in enumerate(_lines(text), start=1):
        if line.strip().startswith(BEGIN):
            if opened is not None:
                raise MERBenchError(f"{rel}: armer-merbench block opened at line {opened} is not closed before "
                                    f"line {number}")
            opened = number
        elif line.strip().startswith("# <<< armer-merbench"):
            if opened is None:
                raise MERBenchError(f"{rel}: line {number} closes an armer-merbench block that was never opened")
            if out and not line.endswith(("\n", "\r")):  # appended to a last line that had no ending
                out[-1] = out[-1].rstrip("\r\n")
            opened = None
        elif opened is None:
            out.append(line)
    if opened is not None:
        raise MERBenchError(f"{rel}: armer-merbench block opened at line {opened} is never closed")
    return "".join(out)


def _read(path: Path) -> str | None:
    return path.read_bytes().decode("utf-8") if path.is_file() else None


def _parse(text: str, rel: str, edited: bool = False) -> ast.Module:
    """The module's tree; an `edited` text must also compile (an earlier installer wrote an IndentationError)."""
    source = text.lstrip("\ufeff")
    try:
        if edited:
            compile(source, rel, "exec", dont_inherit=True)
        return ast.parse(source, filename=rel)
    except SyntaxError as error:  # IndentationError and TabError included
        where = f"{type(error).__name__}: {error.msg}, line {error.lineno}"
        raise MERBenchError(f"the edited {rel} would not compile ({where}); please report this with your {rel}"
                            if edited else f"{rel} is not valid Python ({where}); fix it first") from error


def _find_dict(tree: ast.Module, rel: str) -> tuple[ast.Assign, ast.Dict]:
    """The one `NAME = {...}` of `rel`, else its one dict literal mapping 'attention' (all MERBench versions)."""
    name = MAPS[rel][0]
    assigns = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Dict)]
    found = [n for n in assigns if any(isinstance(t, ast.Name) and t.id == name for t in n.targets)] or [
        n for n in assigns if any(isinstance(k, ast.Constant) and k.value == "attention" for k in n.value.keys)]
    if len(found) != 1:
        raise MERBenchError(f"{rel}: expected exactly one dict literal `{name} = {{'attention': ..., ...}}`, found "
                            f"{len(found)}; this MERBench version is not supported by the installer")
    return found[0], found[0].value  # type: ignore[return-value]


def _entries(tree: ast.Module, rel: str) -> dict[str, str]:
    """The map's keys (its literal and any `NAME.update({...})`) -> value source."""
    assign, literal = _find_dict(tree, rel)
    target = next((t.id for t in assign.targets if isinstance(t, ast.Name)), None)
    dicts = [literal] + [n.args[0] for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
                         and isinstance(n.args[0], ast.Dict) and isinstance(n.func, ast.Attribute)
                         and n.func.attr == "update" and getattr(n.func.value, "id", None) == target]
    return {k.value: ast.unparse(v) for d in dicts for k, v in zip(d.keys, d.values)
            if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def _imported(tree: ast.Module) -> set[str]:
    return {a.asname or a.name.split(".")[0] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names}


def _refuse_taken(tree: ast.Module, rel: str, models: tuple[str, ...]) -> None:
    existing = _entries(tree, rel)
    if taken := [name for name in models if name in existing]:
        others = ",".join(m for m in DEFAULT_MODELS if m != taken[0])
        raise MERBenchError(f"{rel} already registers a model named {taken[0]!r} ({existing[taken[0]]}), not through "
                            f"this installer. Remove it first, or install only the others with --models {others}")


def _edit_map(text: str, rel: str, models: tuple[str, ...], note: str) -> str:
    """`models` into the map of `rel`: lines after its opening brace or, where the brace does not end
    its line, a `NAME.update({...})` after the assignment."""
    assign, literal = _find_dict(_parse(text, rel), rel)
    values = MAPS[rel][1]
    lines = _lines(text)
    brace = lines[literal.lineno - 1].encode("utf-8")[literal.col_offset + 1:].decode("utf-8").strip()
    if brace and not brace.startswith("#"):
        target = next(t.id for t in assign.targets if isinstance(t, ast.Name))
        items = ", ".join(f"{name!r}: {values[name]}" for name in models)
        return _insert(text, assign.end_lineno, _indent(lines[assign.lineno - 1]), note,
                       [f"{target}.update({{{items}}})"])
    key = next((k for k in literal.keys if k is not None), None)
    indent = _indent(lines[key.lineno - 1]) if key and _starts_line(lines, key) else \
        _indent(lines[literal.lineno - 1]) + "    "
    return _insert(text, literal.lineno, indent, note, [f"{name!r}: {values[name]}," for name in models])


def _edit_models_init(text: str, models: tuple[str, ...]) -> str:
    tree = _parse(text, MODELS_INIT)
    _refuse_taken(tree, MODELS_INIT, models)
    if clash := [MODEL_CLASSES[name] for name in models if MODEL_CLASSES[name] in _imported(tree)]:
        raise MERBenchError(f"{MODELS_INIT} already imports a name {clash[0]!r}; remove that import first")
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    anchor = [n for n in imports if isinstance(n, ast.ImportFrom) and n.level] or imports
    docstring = tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant)
    after = anchor[-1].end_lineno if anchor else tree.body[0].end_lineno if docstring else 0
    text = _insert(text, after, "", "AttentionRobustV2 (uninstall: python -m armer.merbench uninstall .)",
                   [f"from .{name} import {MODEL_CLASSES[name]}" for name in models])
    note = "AttentionRobustV2 and its V1 baseline (armer; utt/frm_align/frm_unalign)"
    return _edit_map(text, MODELS_INIT, models, note)


def _edit_data_init(text: str, models: tuple[str, ...]) -> str:
    tree = _parse(text, DATA_INIT)
    _refuse_taken(tree, DATA_INIT, models)
    if "Data_Feat" not in _imported(tree):
        raise MERBenchError(f"{DATA_INIT} does not import Data_Feat (`from .feat_data import Data_Feat`); "
                            f"unsupported MERBench version")
    return _edit_map(text, DATA_INIT, models, "AttentionRobustV2 reads MERBench features")


def tune_values(name: str) -> dict[str, tuple[object, str]]:
    """The model-tune.yaml section of one model: setting -> (seed default, help)."""
    return {**{key: (value, help_text) for key, value, help_text in settings()
               if name == "attention_robust_v2" or key not in _V2_ONLY}, **MERBENCH_ENTRIES}


def _yaml_keys(text: str) -> list[str]:
    """Top-level keys of a block-style YAML file such as model-tune.yaml (no PyYAML needed)."""
    matches = (re.match(r"([^\s#'\"-][^:#]*?)\s*:(\s.*)?$", line.rstrip("\r\n")) for line in _lines(text))
    return [m.group(1).strip() for m in matches if m]


def _edit_tune_yaml(text: str, models: tuple[str, ...]) -> str:
    body: list[str] = []
    for name in models:
        if name in _yaml_keys(text):
            raise MERBenchError(f"{TUNE_YAML} already has a section {name!r}, not written by this installer; "
                                f"remove it or choose --models")
        body += [""] * bool(body) + [f"{name}:"] + [
            f"  {key}: [{json.dumps(value)}]" + (help_text and f"  # {help_text}")
            for key, (value, help_text) in tune_values(name).items()]
    note = "seed defaults of AttentionRobustV2 and its V1 baseline (one value each: no random search)"
    return _insert(text, len(_lines(text)), "", note, body)


def _argparse(text: str, rel: str) -> tuple[str, int, set[str]] | None:
    """(parser variable, line of the statement with its `parse_args()`, its flags) of the argparse
    parser that has a `--model` flag; None when the script has none."""
    tree, flags = _parse(text, rel), {}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name)]
    for n in calls:
        if n.func.attr == "add_argument":
            flags.setdefault(n.func.value.id, set()).update(
                a.value for a in n.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    parsers = [name for name, options in flags.items() if "--model" in options]
    if len(parsers) != 1:
        return None
    parse = [n for n in calls if n.func.attr == "parse_args" and n.func.value.id == parsers[0]]
    if len(parse) != 1:
        raise MERBenchError(f"{rel}: expected one `{parsers[0]}.parse_args()` call, found {len(parse)}")
    compound = (ast.If, ast.For, ast.While, ast.With, ast.Try, ast.FunctionDef, ast.ClassDef)
    statement = max((n for n in ast.walk(tree) if isinstance(n, ast.stmt) and not isinstance(n, compound)
                     and n.lineno <= parse[0].lineno and n.end_lineno >= parse[0].end_lineno),
                    key=lambda n: (n.lineno, -n.end_lineno))
    if not _starts_line(_lines(text), statement):
        raise MERBenchError(f"{rel}: line {statement.lineno} holds more than one statement; "
                            f"put `parse_args()` on its own line")
    return parsers[0], statement.lineno, flags[parsers[0]]


def _edit_script(text: str, rel: str) -> str:
    found = _argparse(text, rel)
    missing = [setting for setting in settings() if found and f"--{setting[0]}" not in found[2]]
    if not found or not missing:
        return text
    parser, line, flags = found
    body = ["def _armer_bool(value):",
            "    if str(value).lower() in ('1', 'true', 'yes', 'y'): return True",
            "    if str(value).lower() in ('0', 'false', 'no', 'n'): return False",
            "    raise ValueError(value)",
            "_armer_bool.__name__ = 'boolean'"] if any(isinstance(value, bool) for _, value, _ in missing) else []
    for key, value, help_text in missing:
        spec = "type=_armer_bool, nargs='?', const=True" if isinstance(value, bool) else f"type={type(value).__name__}"
        scope = "AttentionRobustV2" if key in _V2_ONLY else "attention_robust(_v2)"
        full_help = f"{scope}: {help_text or key}".replace("%", "%%")  # argparse formats help with %
        body.append(f"{parser}.add_argument('--{key}', {spec}, default=None, help={full_help!r})")
        if isinstance(value, bool) and f"--no-{key}" not in flags:  # the spelling armer.train uses
            body.append(f"{parser}.add_argument('--no-{key}', dest='{key}', action='store_const', const=False, "
                        f"help='same as --{key} false')")
    note = "AttentionRobustV2 flags; default None = the value in toolkit/model-tune.yaml"
    return _insert(text, line - 1, _indent(_lines(text)[line - 1]), note, body)


def shim_source(name: str) -> str:
    """toolkit/models/<name>.py: the model from the installed armer package."""
    return f'''{SHIM_TAG}: written by `python -m armer.merbench install`; removed by `... uninstall`.
"""MERBench model `{name}`: {MODEL_CLASSES[name]} from the armer package (`pip install /path/to/ARMER`)."""
try:
    from armer.merbench.adapter import {MODEL_CLASSES[name]}
except ImportError as _error:  # keep MERBench's other models usable without armer
    _ARMER_IMPORT_ERROR = _error

    class {MODEL_CLASSES[name]}:
        def __init__(self, args):
            raise ImportError("model '{name}' needs the armer package in this Python environment: pip install "
                              "/path/to/ARMER (import failed: %s)" % (_ARMER_IMPORT_ERROR,)) from _ARMER_IMPORT_ERROR
'''


def _verify(rel: str, text: str, original: str, models: tuple[str, ...]) -> list[str]:
    """Problems of one edited file (none: fine), found without importing it."""
    try:
        tree = _parse(text, rel, edited=True) if rel.endswith(".py") else None
    except MERBenchError as error:
        return [str(error)]
    problems = [f"{rel}: the edit changed lines outside its blocks"] if strip_blocks(text, rel) != original else []
    if rel in MAPS:
        entries, imported, (variable, values) = _entries(tree, rel), _imported(tree), MAPS[rel]
        problems += [f"{rel}: {variable}[{n!r}] is {entries.get(n)!r}, expected {values[n]}" for n in models
                     if entries.get(n) != values[n] or (rel == MODELS_INIT and MODEL_CLASSES[n] not in imported)]
    elif rel == TUNE_YAML:
        problems += [f"{rel}: expected one section {n!r}" for n in models if _yaml_keys(text).count(n) != 1]
        try:
            import yaml  # PyYAML (MERBench's OmegaConf needs it); without it the line check above suffices
        except ImportError:
            return problems
        try:
            data, before = yaml.safe_load(text), yaml.safe_load(original) or {}
        except yaml.YAMLError as error:
            return problems + [f"{rel}: not valid YAML after the edit ({error})"]
        data = data if isinstance(data, dict) else {}
        expected = {**before, **{n: {k: [v] for k, (v, _) in tune_values(n).items()} for n in models}}
        problems += [f"{rel}: section {k!r} reads as {data.get(k)!r}, expected {v!r}" for k, v in expected.items()
                     if data.get(k) != v]
    elif rel.startswith("main") and (found := _argparse(text, rel)):
        lacking = [f"--{key}" for key, _, _ in settings() if f"--{key}" not in found[2]]
        problems += [f"{rel}: flags {lacking} are not defined"] * bool(lacking)
    return problems


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


def _locate(path: str | os.PathLike) -> tuple[Path, list[str], list[str]]:
    """(root, main*.py with MERBench's argparse block, main*.py that could not be parsed)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise NotMERBenchError(f"{root} does not exist or is not a folder; pass the MERBench folder of a MERTools "
                               f"checkout")
    missing = [rel for rel in (MODELS_INIT, DATA_INIT, TUNE_YAML) if not (root / rel).is_file()]
    scripts, skipped = [], []
    for script in sorted(root.glob("main*.py")):
        try:
            if _argparse(strip_blocks(script.read_bytes().decode("utf-8", "replace"), script.name), script.name):
                scripts.append(script.name)
        except MERBenchError:
            skipped.append(script.name)
    if not scripts:
        missing.append("main-release.py (a main*.py with an argparse `--model` flag)")
    if missing:
        hint = f" Did you mean {root / 'MERBench'}?" if (root / "MERBench" / "toolkit").is_dir() else ""
        raise NotMERBenchError(f"{root} is not a MERBench checkout: missing {', '.join(missing)}. Pass the MERBench "
                               f"folder of zeroQiaoba/MERTools (the one with main-release.py and toolkit/).{hint}")
    return root, scripts, skipped


def _models(models: Iterable[str] | str | None) -> tuple[str, ...]:
    names = models.split(",") if isinstance(models, str) else models or DEFAULT_MODELS
    chosen = {name.strip() for name in names if name.strip()}
    if not chosen or chosen - set(MODEL_CLASSES):
        raise MERBenchError(f"unknown model(s) {sorted(chosen - set(MODEL_CLASSES))}; choose from "
                            f"{', '.join(DEFAULT_MODELS)}")
    return tuple(m for m in DEFAULT_MODELS if m in chosen)


def _installed(root: Path) -> dict | None:
    path = root / STATE_DIR / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _plan(root: Path, scripts: list[str], models: tuple[str, ...]) -> list[Edit]:
    """Every file install would write, before and after, checked; raises before anything is written."""
    editors = {MODELS_INIT: _edit_models_init, DATA_INIT: _edit_data_init, TUNE_YAML: _edit_tune_yaml}
    edits, problems = [], []
    for rel in [*editors, *scripts]:
        before = _read(root / rel) or ""
        original = strip_blocks(before, rel)
        after = editors[rel](original, models) if rel in editors else _edit_script(original, rel)
        edits.append(Edit(rel, before, after))
        problems += _verify(rel, edits[-1].after, original, models)
    for rel, name in SHIMS.items():
        before = _read(root / rel)
        if before is not None and not before.startswith(SHIM_TAG):
            if name in models:
                raise MERBenchError(f"{rel} exists and was not written by this installer; move it away first, or "
                                    f"install only the others with --models")
        elif before is not None or name in models:  # ours: written, kept or removed
            edits.append(Edit(rel, before, shim_source(name) if name in models else None))
            problems += _verify(rel, edits[-1].after, edits[-1].after, models) if name in models else []
    if problems:
        raise MERBenchError("the edits failed their checks; nothing was written:\n  " + "\n  ".join(problems))
    return edits


def _write(root: Path, edits: list[Edit]) -> None:
    for edit in edits:
        path = root / edit.rel
        if edit.after is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.armer-tmp")
        tmp.write_bytes(edit.after.encode("utf-8"))
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)  # a file holds the old or the new text, never part of one


def install(path: str | os.PathLike, models: Iterable[str] | str | None = None, dry_run: bool = False) -> Result:
    """Register the models in the MERBench checkout at `path` (see the module docstring)."""
    models = _models(models)
    root, scripts, skipped = _locate(path)
    edits = _plan(root, scripts, models)
    changed = [edit for edit in edits if edit.changed]
    messages = [f"warning: {name} could not be parsed and was left alone" for name in skipped]
    if dry_run:
        return Result(root, edits, messages + [f"dry run: {len(changed) or 'no'} file(s) would change in {root}"])
    if not changed:
        return Result(root, edits, messages + [f"{', '.join(models)} already installed in {root}; nothing changed"])
    state = root / STATE_DIR
    for edit in changed:
        if edit.rel not in SHIMS:  # the file without our blocks: the original, or the user's latest version
            (state / "backup" / edit.rel).parent.mkdir(parents=True, exist_ok=True)
            (state / "backup" / edit.rel).write_bytes(strip_blocks(edit.before or "", edit.rel).encode("utf-8"))
    _write(root, changed)
    try:
        armer_version = version("armer")
    except PackageNotFoundError:  # running from a source tree
        armer_version = "source"
    (state / "manifest.json").write_text(json.dumps({"models": list(models), "version": armer_version}) + "\n")
    return Result(root, edits, messages + [
        f"installed {', '.join(models)} into {root}: changed {', '.join(e.rel for e in changed)}",
        f"backups of the originals: {state / 'backup'} (undo: python -m armer.merbench uninstall {root})"])


def uninstall(path: str | os.PathLike, dry_run: bool = False, force: bool = False) -> Result:
    """Undo `install`: its blocks, the shims and their compiled files, and the state folder removed."""
    root = Path(path).expanduser().resolve()
    if not (root / STATE_DIR).is_dir():
        _locate(root)  # a clear error if this is not MERBench at all
    backups, installed = root / STATE_DIR / "backup", (_installed(root) or {}).get("models", [])
    edits, messages = [], []
    for rel in [MODELS_INIT, DATA_INIT, TUNE_YAML, *(p.name for p in sorted(root.glob("main*.py"))), *SHIMS]:
        current = _read(root / rel)
        if current is None or (rel not in SHIMS and "armer-merbench" not in current):
            continue
        if rel in SHIMS:  # ours if tagged; untagged, if of an installed model: edited since
            if not current.startswith(SHIM_TAG) and SHIMS[rel] in installed and not force:
                raise MERBenchError(f"{rel} was written by install and edited since; remove it by hand or pass --force")
            edits += [Edit(rel, current, None)] if current.startswith(SHIM_TAG) or SHIMS[rel] in installed else []
            continue
        try:
            stripped = strip_blocks(current, rel)
            if rel.endswith(".py"):
                _parse(stripped, rel, edited=True)
        except MERBenchError as error:
            original = _read(backups / rel)
            if not force or original is None:
                restore = (f"The original is in {backups / rel}; pass --force to restore it (your version is kept as "
                           f"{rel}.armer-modified). " if original is not None else "")
                raise MERBenchError(f"{rel} was changed after install and its armer-merbench blocks cannot be "
                                    f"removed ({error}). {restore}Nothing was changed.") from error
            edits += [Edit(rel + ".armer-modified", None, current), Edit(rel, current, original)]
            messages.append(f"{rel}: restored the original; your changed version is {rel}.armer-modified")
            continue
        edits.append(Edit(rel, current, stripped))
        if _read(backups / rel) not in (None, stripped):
            messages.append(f"{rel} was changed after install: removed the armer blocks and kept your other changes")
    changed = [edit for edit in edits if edit.changed]
    if dry_run:
        return Result(root, edits, messages + [f"dry run: {len(changed) or 'no'} file(s) would change in {root}"])
    if not changed and not (root / STATE_DIR).is_dir():
        return Result(root, edits, messages + [f"nothing of armer is installed in {root}"])
    _write(root, changed)
    for edit in changed:
        if edit.rel in SHIMS:  # what MERBench's imports compiled from the shim
            for compiled in (root / edit.rel).parent.glob(f"__pycache__/{SHIMS[edit.rel]}.*.pyc"):
                compiled.unlink()
    shutil.rmtree(root / STATE_DIR, ignore_errors=True)
    done = ", ".join(e.rel for e in changed) or "no file needed changing"
    return Result(root, edits, messages + [f"uninstalled from {root}: {done}"])


def status(path: str | os.PathLike) -> list[str]:
    """What is installed and whether each file is as install leaves it (and otherwise as backed up)."""
    root, scripts, _ = _locate(path)
    installed = _installed(root)
    if installed is None:
        return [f"armer is not installed in {root}"]
    lines = [f"installed in {root}: {', '.join(installed['models'])} (armer {installed.get('version')})"]
    try:
        edits = _plan(root, scripts, _models(installed["models"]))
    except MERBenchError as error:
        return lines + [f"  problem: {error}"]
    for edit in edits:
        same = not edit.changed and _read(root / STATE_DIR / "backup" / edit.rel) in (
            None, strip_blocks(edit.before or "", edit.rel))
        lines.append(f"  {edit.rel}: {'as installed' if same else 'CHANGED since install'}")
    return lines


CHECK_SCRIPT = r"""
import argparse, sys
sys.path.insert(0, '.')
import torch
from toolkit.models import get_models
torch.manual_seed(0)
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
    root, scripts, _ = _locate(path)
    installed = _models((_installed(root) or {}).get("models"))
    if stale := [edit.rel for edit in _plan(root, scripts, installed) if edit.changed]:
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
                print(f"error: the files are installed and verified, but the import check failed: {error}\nFix the "
                      f"environment (is armer installed in this Python?) and run `python -m armer.merbench check "
                      f"{result.root}`, or undo with `python -m armer.merbench uninstall {result.root}`.",
                      file=sys.stderr)
                return 1
    except MERBenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
