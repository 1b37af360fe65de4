"""Register AttentionRobustV2 (and the V1 baseline) in a MERBench checkout, and undo it.

MERBench (zeroQiaoba/MERTools, folder MERBench) knows its models through four places, all of
which `install` edits:

  toolkit/models/__init__.py  `from .attention import Attention` imports and the dict literal
                              `MODEL_MAP = {'attention': Attention, ...}` inside `get_models`
  toolkit/data/__init__.py    the dict literal `MODEL_DATASET_MAP = {'attention': Data_Feat, ...}`
  toolkit/model-tune.yaml     one top-level section per model: `name: {param: [values]}`;
                              `main-release.py` draws one value per list and fills it into `args`
                              wherever `args` holds None
  main*.py                    the argparse block (`main-release.py` upstream): the V2 flags, all
                              with default None so that model-tune.yaml supplies the defaults

plus one new file per model, `toolkit/models/<name>.py`, a shim that imports the model from the
installed `armer` package (the model code lives only there).

How the edits are made, so that they cannot leave a broken MERBench behind:
  - the structures are located with `ast` (the real dict literal, the real `parse_args()` call),
    never by line numbers or text replacement;
  - every edit inserts whole lines between `# >>> armer-merbench` / `# <<< armer-merbench` markers
    and changes no existing line, so removing the marked blocks gives back the original text;
  - every edited file is compiled (Python) or parsed (YAML) and its structure checked before
    anything is written; one failure writes nothing;
  - install is idempotent: it strips its own blocks and re-applies them, and writes only if the
    result differs from what is on disk;
  - the original of every file it touches is kept under `.armer-merbench/backup/` with a manifest
    of hashes. `uninstall` restores a file from that backup when the file is as install left it
    (byte-identical result). A file changed since install is not overwritten: its armer blocks are
    removed and the other changes kept; if its markers were damaged, uninstall refuses and names the
    backup (`--force` restores the backup and keeps the changed file as `<file>.armer-modified`).
"""
from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable

from armer.config import ModelConfig

BEGIN = "# >>> armer-merbench"
END = "# <<< armer-merbench <<<"
SHIM_TAG = "# armer-merbench shim"
STATE_DIR = ".armer-merbench"
MANIFEST = "manifest.json"

MODELS_INIT = "toolkit/models/__init__.py"
DATA_INIT = "toolkit/data/__init__.py"
TUNE_YAML = "toolkit/model-tune.yaml"
REQUIRED_FILES = (MODELS_INIT, DATA_INIT, TUNE_YAML)

# MERBench name -> class name in armer.merbench.adapter
MODEL_CLASSES: dict[str, str] = {
    "attention_robust_v2": "AttentionRobustV2",
    "attention_robust": "AttentionRobust",
}
DEFAULT_MODELS = tuple(MODEL_CLASSES)
DEFAULT_LR = 1e-3  # the seed fixes no learning rate; MERBench's `attention` draws 1e-3 or 1e-4

_D = ModelConfig()
# ModelConfig fields that MERBench itself sets on `args` (from the data) or keeps in model-tune.yaml only.
_SET_BY_MERBENCH = ("model", "audio_dim", "text_dim", "video_dim", "feat_type", "output_dim1", "output_dim2", "grad_clip")
# Settings that only V2 reads; every other hyper-parameter (present or future) applies to both models.
_V2_ONLY = ("use_vae", "kl_weight", "recon_weight", "cross_kl_weight", "use_proxy_attention",
            "fusion_temperature", "num_attention_heads", "calibration_weight")
HYPER_PARAMETERS = tuple(f.name for f in fields(ModelConfig) if f.name not in _SET_BY_MERBENCH)
_HELP = {  # overrides of the comments in armer/config.py, where MERBench needs more context
    "recon_weight": "AttentionRobustV2 (MISA reads it too): weight of the reconstruction loss",
    "hidden_dim": "hidden size (models read it from model-tune.yaml unless given)",
    "dropout": "dropout rate (models read it from model-tune.yaml unless given)",
    "num_attention_heads": "AttentionRobustV2: heads of the proxy cross-modal attention",
}


def _field_comments() -> dict[str, str]:
    """ModelConfig's field comments (trailing, or the comment block above a field) as help texts."""
    import inspect

    from armer import config as config_module

    comments: dict[str, str] = {}
    block: list[str] = []
    try:
        source = inspect.getsource(config_module.ModelConfig)
    except (OSError, TypeError):  # installed without sources: plain names as help
        return comments
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("# ").strip())
            continue
        match = re.match(r"(\w+)\s*:\s*[^=]+=[^#]*(?:#\s*(.*))?$", stripped)
        if match:
            text = match.group(2) or " ".join(block)
            text = re.sub(r"^Not in the seed:\s*", "", text)
            comments[match.group(1)] = text.split(". ")[0].rstrip(".")
        block = []
    return comments


_COMMENTS = _field_comments()


def _help(name: str) -> str:
    scope = "AttentionRobustV2" if name in _V2_ONLY else "attention_robust(_v2)"
    return _HELP.get(name) or f"{scope}: {_COMMENTS.get(name) or name}"


def _kind(value: object) -> str:
    return "bool" if isinstance(value, bool) else type(value).__name__


# Command-line flags: (flag, kind, help), one per ModelConfig hyper-parameter (the seed's eleven
# and any added since). Their defaults are None: the values come from model-tune.yaml.
FLAGS: tuple[tuple[str, str, str], ...] = tuple(
    (name, _kind(getattr(_D, name)), _help(name)) for name in HYPER_PARAMETERS
)

# model-tune.yaml sections: one value per list, so MERBench's random draw picks the default.
TUNE_KEYS: dict[str, tuple[str, ...]] = {
    "attention_robust_v2": HYPER_PARAMETERS + ("grad_clip", "lr"),
    "attention_robust": tuple(n for n in HYPER_PARAMETERS if n not in _V2_ONLY) + ("grad_clip", "lr"),
}


class MERBenchError(Exception):
    """An install/uninstall that cannot go ahead; nothing was written."""


class NotMERBenchError(MERBenchError):
    """PATH is not a MERBench checkout."""


# --------------------------------------------------------------------------- text helpers

def _lines(text: str) -> list[str]:
    """Lines with their own endings (\\n, \\r\\n or \\r), as Python's tokenizer counts them."""
    return io.StringIO(text, newline="").readlines()


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _insert(text: str, after: int, block: list[str]) -> str:
    """Insert `block` (lines without endings) as whole lines after the first `after` lines."""
    lines = _lines(text)
    nl = _newline(text)
    if after > 0 and not lines[after - 1].endswith(("\n", "\r")):
        lines[after - 1] += nl
    return "".join(lines[:after] + [line + nl for line in block] + lines[after:])


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _char_col(line: str, byte_col: int) -> int:
    """ast's col_offset is a UTF-8 byte offset; the character offset in `line`."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def strip_blocks(text: str, rel: str = "<text>") -> str:
    """`text` without the armer-merbench blocks (marker lines included)."""
    out, inside = [], None
    for number, line in enumerate(_lines(text), start=1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if inside is not None:
                raise MERBenchError(f"{rel}: armer-merbench block opened at line {inside} is not closed before line {number}")
            inside = number
        elif stripped.startswith("# <<< armer-merbench"):
            if inside is None:
                raise MERBenchError(f"{rel}: line {number} closes an armer-merbench block that was never opened")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise MERBenchError(f"{rel}: armer-merbench block opened at line {inside} is never closed")
    return "".join(out)


def has_blocks(text: str) -> bool:
    return any(line.strip().startswith(BEGIN) for line in _lines(text))


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _read(path: Path) -> str | None:
    return path.read_bytes().decode("utf-8") if path.is_file() else None


def _parse(text: str, rel: str) -> ast.Module:
    try:
        return ast.parse(text.lstrip("\ufeff"), filename=rel)
    except SyntaxError as error:
        raise MERBenchError(f"{rel} is not valid Python ({error.msg}, line {error.lineno}); fix it first") from error


def _compile_check(text: str, rel: str) -> ast.Module:
    """The edited text must compile; otherwise nothing is written (the earlier installer's bug)."""
    try:
        compile(text.lstrip("\ufeff"), rel, "exec", dont_inherit=True)
        return ast.parse(text.lstrip("\ufeff"), filename=rel)
    except SyntaxError as error:  # IndentationError and TabError included
        raise MERBenchError(
            f"internal error: the edited {rel} would not compile ({type(error).__name__}: {error.msg}, "
            f"line {error.lineno}); nothing was written. Please report this with your {rel}."
        ) from error


# --------------------------------------------------------------------------- locating structures

def _find_dict(tree: ast.Module, names: tuple[str, ...], rel: str, what: str) -> tuple[ast.stmt, ast.Dict]:
    """The one assignment `NAME = {...}` (NAME in `names`), else the one dict literal that maps
    the string 'attention' (MERBench's baseline, present in every version) to a name."""
    found = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
        and any(isinstance(t, ast.Name) and t.id in names for t in node.targets)
    ]
    if not found:
        found = [
            node for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
            and any(isinstance(k, ast.Constant) and k.value == "attention" for k in node.value.keys)
        ]
    if len(found) != 1:
        raise MERBenchError(
            f"{rel}: expected exactly one {what} (a dict literal `{names[0]} = {{'attention': ..., ...}}`), "
            f"found {len(found)}; this MERBench version is not supported by the installer"
        )
    return found[0], found[0].value  # type: ignore[return-value]


def _dict_entries(node: ast.Dict) -> dict[str, ast.expr]:
    return {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def _insert_dict_entries(text: str, rel: str, names: tuple[str, ...], what: str, entries: dict[str, str], note: str) -> str:
    """Insert `'key': Value,` lines into the dict literal right after its opening brace; if the
    brace does not end its line, add a `NAME.update({...})` statement after the assignment."""
    tree = _parse(text, rel)
    assign, literal = _find_dict(tree, names, rel, what)
    lines = _lines(text)
    brace_line = lines[literal.lineno - 1]
    after_brace = brace_line[_char_col(brace_line, literal.col_offset) + 1:].strip()
    if after_brace == "" or after_brace.startswith("#"):
        first_key = next((k for k in literal.keys if k is not None), None)
        indent = None
        if first_key is not None and first_key.lineno > literal.lineno:
            key_line = lines[first_key.lineno - 1]
            if key_line[: _char_col(key_line, first_key.col_offset)].strip() == "":
                indent = _indent_of(key_line)
        if indent is None:
            indent = _indent_of(brace_line) + "    "
        block = [f"{indent}{BEGIN}: {note} >>>"]
        block += [f"{indent}{key!r}: {value}," for key, value in entries.items()]
        block.append(f"{indent}{END}")
        return _insert(text, literal.lineno, block)
    target = next(t.id for t in assign.targets if isinstance(t, ast.Name))
    indent = _indent_of(lines[assign.lineno - 1])
    items = ", ".join(f"{key!r}: {value}" for key, value in entries.items())
    block = [f"{indent}{BEGIN}: {note} >>>", f"{indent}{target}.update({{{items}}})", f"{indent}{END}"]
    return _insert(text, assign.end_lineno, block)


def _merged_entries(tree: ast.Module, names: tuple[str, ...], rel: str, what: str) -> dict[str, str]:
    """Keys of the dict literal plus keys added by a following `NAME.update({...})`: key -> value source."""
    assign, literal = _find_dict(tree, names, rel, what)
    merged = {k: ast.unparse(v) for k, v in _dict_entries(literal).items()}
    target = next((t.id for t in assign.targets if isinstance(t, ast.Name)), None)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == target
                and node.args and isinstance(node.args[0], ast.Dict)):
            merged.update({k: ast.unparse(v) for k, v in _dict_entries(node.args[0]).items()})
    return merged


def _top_level_imported_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
    return names


# --------------------------------------------------------------------------- the four edits

def edit_models_init(text: str, models: tuple[str, ...]) -> str:
    rel = MODELS_INIT
    tree = _parse(text, rel)
    existing = _merged_entries(tree, ("MODEL_MAP",), rel, "model map")
    imported = _top_level_imported_names(tree)
    for name in models:
        if name in existing:
            raise MERBenchError(
                f"{rel} already registers a model named {name!r} ({existing[name]}), not through this installer "
                f"(an earlier install or your own model?). Remove it first, or install only the others with "
                f"--models {','.join(m for m in DEFAULT_MODELS if m != name)}"
            )
        if MODEL_CLASSES[name] in imported:
            raise MERBenchError(f"{rel} already imports a name {MODEL_CLASSES[name]!r}; remove that import first")
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    relative = [node for node in imports if isinstance(node, ast.ImportFrom) and node.level > 0]
    anchor = (relative or imports)
    if anchor:
        after = anchor[-1].end_lineno
    elif tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(getattr(tree.body[0], "value", None), ast.Constant):
        after = tree.body[0].end_lineno  # after the module docstring
    else:
        after = 0
    block = [f"{BEGIN}: AttentionRobustV2 (uninstall: python -m armer.merbench uninstall .) >>>"]
    block += [f"from .{name} import {MODEL_CLASSES[name]}" for name in models]
    block.append(END)
    text = _insert(text, after, block)
    return _insert_dict_entries(
        text, rel, ("MODEL_MAP",), "model map", {name: MODEL_CLASSES[name] for name in models},
        "AttentionRobustV2 and its V1 baseline (armer; utt/frm_align/frm_unalign)",
    )


def edit_data_init(text: str, models: tuple[str, ...]) -> str:
    rel = DATA_INIT
    tree = _parse(text, rel)
    existing = _merged_entries(tree, ("MODEL_DATASET_MAP",), rel, "dataset map")
    for name in models:
        if name in existing:
            raise MERBenchError(
                f"{rel} already maps a model named {name!r} ({existing[name]}), not through this installer; "
                f"remove it first or choose --models"
            )
    if "Data_Feat" not in _top_level_imported_names(tree):
        raise MERBenchError(f"{rel} does not import Data_Feat (`from .feat_data import Data_Feat`); unsupported MERBench version")
    return _insert_dict_entries(
        text, rel, ("MODEL_DATASET_MAP",), "dataset map", {name: "Data_Feat" for name in models},
        "AttentionRobustV2 reads MERBench features",
    )


def _yaml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def tune_values(name: str) -> dict[str, object]:
    """The model-tune.yaml section of one model: the seed defaults from `ModelConfig`."""
    values: dict[str, object] = {}
    for key in TUNE_KEYS[name]:
        values[key] = DEFAULT_LR if key == "lr" else getattr(_D, key)
    return values


_YAML_TOP_KEY = re.compile(r"^([^\s#'\"-][^:#]*?)\s*:(\s.*)?$")


def yaml_top_level_keys(text: str) -> list[str]:
    """Top-level mapping keys of a block-style YAML file such as model-tune.yaml (no PyYAML needed)."""
    keys = []
    for line in _lines(text):
        match = _YAML_TOP_KEY.match(line.rstrip("\r\n"))
        if match:
            keys.append(match.group(1).strip())
    return keys


def edit_tune_yaml(text: str, models: tuple[str, ...]) -> str:
    existing = yaml_top_level_keys(text)
    for name in models:
        if name in existing:
            raise MERBenchError(
                f"{TUNE_YAML} already has a section {name!r}, not written by this installer; remove it or choose --models"
            )
    block = [f"{BEGIN}: seed defaults of AttentionRobustV2 and its V1 baseline (one value each: no random search) >>>"]
    for index, name in enumerate(models):
        if index:
            block.append("")
        block.append(f"{name}:")
        block += [f"  {key}: [{_yaml_value(value)}]" for key, value in tune_values(name).items()]
    block.append(END)
    return _insert(text, len(_lines(text)), block)


@dataclass
class ScriptInfo:
    parser: str  # variable name of the ArgumentParser
    statement_line: int  # 1-based line of the statement holding `parser.parse_args()`
    flags: set[str]  # option strings already defined on that parser


def inspect_script(text: str, rel: str) -> ScriptInfo | None:
    """The argparse structure of a MERBench entry script, or None if it has no `--model` parser."""
    tree = _parse(text, rel)
    flags: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
                and isinstance(node.func.value, ast.Name)):
            options = {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
            flags.setdefault(node.func.value.id, set()).update(options)
    parsers = [name for name, options in flags.items() if "--model" in options]
    if len(parsers) != 1:
        return None
    parser = parsers[0]
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "parse_args"
        and isinstance(node.func.value, ast.Name) and node.func.value.id == parser
    ]
    if len(calls) != 1:
        raise MERBenchError(f"{rel}: expected one `{parser}.parse_args()` call, found {len(calls)}")
    call = calls[0]
    holders = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.stmt) and node.lineno <= call.lineno and node.end_lineno >= call.end_lineno
        and not isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try, ast.FunctionDef, ast.ClassDef))
    ]
    statement = max(holders, key=lambda node: (node.lineno, -node.end_lineno))
    line = _lines(text)[statement.lineno - 1]
    if line[: _char_col(line, statement.col_offset)].strip():
        raise MERBenchError(f"{rel}: line {statement.lineno} holds more than one statement; put `parse_args()` on its own line")
    return ScriptInfo(parser=parser, statement_line=statement.lineno, flags=flags[parser])


def edit_script(text: str, rel: str) -> str:
    info = inspect_script(text, rel)
    if info is None:
        return text
    missing = [flag for flag in FLAGS if f"--{flag[0]}" not in info.flags]
    if not missing:
        return text
    indent = _indent_of(_lines(text)[info.statement_line - 1])
    p = info.parser
    block = [f"{indent}{BEGIN}: AttentionRobustV2 flags; default None = the value in toolkit/model-tune.yaml >>>"]
    if any(kind == "bool" for _, kind, _ in missing):
        block += [
            f"{indent}def _armer_bool(value):",
            f"{indent}    if str(value).lower() in ('1', 'true', 'yes', 'y'): return True",
            f"{indent}    if str(value).lower() in ('0', 'false', 'no', 'n'): return False",
            f"{indent}    raise ValueError(value)",
            f"{indent}_armer_bool.__name__ = 'boolean'",
        ]
    for flag, kind, help_text in missing:
        if kind == "bool":
            spec = "type=_armer_bool, nargs='?', const=True"
        else:
            spec = f"type={kind}"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        block.append(f"{indent}{p}.add_argument('--{flag}', {spec}, default=None, help={help_text!r})")
        if kind == "bool" and f"--no-{flag}" not in info.flags:  # the spelling armer.train uses
            block.append(f"{indent}{p}.add_argument('--no-{flag}', dest='{flag}', action='store_const', const=False, "
                         f"help='same as --{flag} false')")
    block.append(f"{indent}{END}")
    return _insert(text, info.statement_line - 1, block)


def shim_source(name: str) -> str:
    cls = MODEL_CLASSES[name]
    return (
        f"{SHIM_TAG}: written by `python -m armer.merbench install`; removed by `... uninstall`.\n"
        f'"""MERBench model `{name}`: {cls} from the armer package (the model code lives there).\n'
        f"\n"
        f"Install armer into this environment (`pip install .` in the ARMER checkout) to use it.\n"
        f'"""\n'
        f"try:\n"
        f"    from armer.merbench.adapter import {cls}\n"
        f"except ImportError as _error:  # keep MERBench's other models usable without armer\n"
        f"    _ARMER_IMPORT_ERROR = _error\n"
        f"\n"
        f"    class {cls}:\n"
        f"        def __init__(self, args):\n"
        f"            raise ImportError(\n"
        f"                \"model '{name}' needs the armer package in this Python environment: \"\n"
        f"                \"pip install /path/to/ARMER (import failed: %s)\" % (_ARMER_IMPORT_ERROR,)\n"
        f"            ) from _ARMER_IMPORT_ERROR\n"
    )


def shim_path(name: str) -> str:
    return f"toolkit/models/{name}.py"


# --------------------------------------------------------------------------- checkout, manifest, plan

@dataclass
class Checkout:
    root: Path
    scripts: list[str]  # entry scripts with MERBench's argparse block (relative paths)
    skipped: list[str] = field(default_factory=list)  # main*.py that could not be parsed


def locate(path: str | os.PathLike) -> Checkout:
    """Check that `path` is a MERBench checkout (the MERBench folder of MERTools)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise NotMERBenchError(f"{root} does not exist or is not a folder; pass the MERBench folder of a MERTools checkout")
    missing = [rel for rel in REQUIRED_FILES if not (root / rel).is_file()]
    scripts, skipped = [], []
    for script in sorted(root.glob("main*.py")):
        text = script.read_bytes().decode("utf-8", errors="replace")
        try:
            info = inspect_script(strip_blocks(text, script.name), script.name)
        except MERBenchError:
            skipped.append(script.name)
            continue
        if info is not None:
            scripts.append(script.name)
    if not scripts:
        missing.append("main-release.py (a main*.py with an argparse `--model` flag)")
    if missing:
        hint = ""
        if (root / "MERBench" / "toolkit").is_dir():
            hint = f" Did you mean {root / 'MERBench'}?"
        raise NotMERBenchError(
            f"{root} is not a MERBench checkout: missing {', '.join(missing)}. Pass the MERBench folder of "
            f"zeroQiaoba/MERTools (the one with main-release.py and toolkit/).{hint}"
        )
    return Checkout(root=root, scripts=scripts, skipped=skipped)


def load_manifest(root: Path) -> dict | None:
    path = root / STATE_DIR / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class Edit:
    rel: str
    before: str | None  # None: the file does not exist
    after: str | None  # None: the file is removed

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        a = [] if self.before is None else _lines(self.before)
        b = [] if self.after is None else _lines(self.after)
        lines = difflib.unified_diff(
            a, b, fromfile="/dev/null" if self.before is None else f"a/{self.rel}",
            tofile="/dev/null" if self.after is None else f"b/{self.rel}",
        )
        return "".join(line if line.endswith(("\n", "\r")) else line + "\n" for line in lines)


def _parse_models(models: Iterable[str] | str | None) -> tuple[str, ...]:
    if models is None:
        return DEFAULT_MODELS
    if isinstance(models, str):
        models = [m for m in models.split(",") if m.strip()]
    chosen = tuple(dict.fromkeys(m.strip() for m in models))
    unknown = [m for m in chosen if m not in MODEL_CLASSES]
    if unknown or not chosen:
        raise MERBenchError(f"unknown model(s) {unknown or chosen!r}; choose from {', '.join(DEFAULT_MODELS)}")
    return tuple(m for m in DEFAULT_MODELS if m in chosen)


def plan_install(checkout: Checkout, models: tuple[str, ...], manifest: dict | None) -> list[Edit]:
    """Every file install would write, before and after; raises before anything is written."""
    root = checkout.root
    ours = set((manifest or {}).get("files", {}))
    edits = []
    editors: list[tuple[str, Callable[[str], str]]] = [
        (MODELS_INIT, lambda t: edit_models_init(t, models)),
        (DATA_INIT, lambda t: edit_data_init(t, models)),
        (TUNE_YAML, lambda t: edit_tune_yaml(t, models)),
    ]
    editors += [(rel, lambda t, rel=rel: edit_script(t, rel)) for rel in checkout.scripts]
    for rel, editor in editors:
        current = _read(root / rel)
        assert current is not None
        edits.append(Edit(rel, current, editor(strip_blocks(current, rel))))
    for name in DEFAULT_MODELS:
        rel = shim_path(name)
        current = _read(root / rel)
        wanted = shim_source(name) if name in models else None
        if current is not None and rel not in ours and not current.startswith(SHIM_TAG):
            if name in models:
                raise MERBenchError(
                    f"{rel} exists and was not written by this installer (an earlier install of this model?); "
                    f"move it away first, or install only the others with --models"
                )
            continue  # someone else's file for a model we do not install: leave it alone
        if current is None and wanted is None:
            continue
        edits.append(Edit(rel, current, wanted))
    return edits


def verify_text(rel: str, text: str, models: tuple[str, ...], original: str | None = None) -> list[str]:
    """Problems with one installed file (empty list: fine). Structural, no imports."""
    problems = []
    if rel.endswith(".py"):
        try:
            tree = _compile_check(text, rel)
        except MERBenchError as error:
            return [str(error)]
    if rel == MODELS_INIT:
        entries = _merged_entries(tree, ("MODEL_MAP",), rel, "model map")
        imports = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                   and node.level == 1 and node.module in models for alias in node.names}
        for name in models:
            if entries.get(name) != MODEL_CLASSES[name]:
                problems.append(f"{rel}: MODEL_MAP[{name!r}] is {entries.get(name)!r}, expected {MODEL_CLASSES[name]}")
            if MODEL_CLASSES[name] not in imports:
                problems.append(f"{rel}: `from .{name} import {MODEL_CLASSES[name]}` is missing")
    elif rel == DATA_INIT:
        entries = _merged_entries(tree, ("MODEL_DATASET_MAP",), rel, "dataset map")
        for name in models:
            if entries.get(name) != "Data_Feat":
                problems.append(f"{rel}: MODEL_DATASET_MAP[{name!r}] is {entries.get(name)!r}, expected Data_Feat")
    elif rel == TUNE_YAML:
        problems += _verify_yaml(text, models, original)
    elif rel.startswith("main") and rel.endswith(".py"):
        info = inspect_script(text, rel)
        if info is not None:
            lacking = [f"--{flag}" for flag, _, _ in FLAGS if f"--{flag}" not in info.flags]
            if lacking:
                problems.append(f"{rel}: flags {lacking} are not defined")
    if original is not None and rel.endswith(".py") and strip_blocks(text, rel) != original:
        problems.append(f"{rel}: the edit changed lines outside its armer-merbench blocks")
    return problems


def _verify_yaml(text: str, models: tuple[str, ...], original: str | None) -> list[str]:
    problems = []
    keys = yaml_top_level_keys(text)
    for name in models:
        if keys.count(name) != 1:
            problems.append(f"{TUNE_YAML}: expected one section {name!r}, found {keys.count(name)}")
    try:
        import yaml  # PyYAML (MERBench's OmegaConf depends on it); the line check above suffices without it
    except ImportError:
        return problems
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return problems + [f"{TUNE_YAML}: not valid YAML after the edit ({error})"]
    if not isinstance(data, dict):
        return problems + [f"{TUNE_YAML}: not a mapping after the edit"]
    for name in models:
        expected = {key: [value] for key, value in tune_values(name).items()}
        if data.get(name) != expected:
            problems.append(f"{TUNE_YAML}: section {name!r} reads as {data.get(name)!r}, expected {expected!r}")
    if original is not None:
        before = yaml.safe_load(original) or {}
        if any(data.get(key) != value for key, value in before.items()):
            problems.append(f"{TUNE_YAML}: the edit changed existing sections")
    return problems


# --------------------------------------------------------------------------- writing

def _write_atomic(path: Path, data: bytes | None) -> None:
    if data is None:
        if path.exists():
            path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.armer-tmp")
    tmp.write_bytes(data)
    if path.exists():
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


def _write_all(root: Path, writes: list[tuple[str, bytes | None]]) -> None:
    """Write every file or none: on a failure, the files already written are put back."""
    done: list[tuple[str, bytes | None]] = []
    try:
        for rel, data in writes:
            path = root / rel
            done.append((rel, path.read_bytes() if path.is_file() else None))
            _write_atomic(path, data)
    except OSError as error:
        for rel, old in reversed(done):
            try:
                _write_atomic(root / rel, old)
            except OSError:
                pass
        raise MERBenchError(f"could not write {rel} ({error}); the files already written were put back") from error


@dataclass
class Result:
    root: Path
    edits: list[Edit]
    messages: list[str]

    @property
    def changed(self) -> list[str]:
        return [edit.rel for edit in self.edits if edit.changed]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("armer")
    except Exception:  # not pip-installed: running from a source tree
        return "source"


def install(path: str | os.PathLike, models: Iterable[str] | str | None = None, dry_run: bool = False) -> Result:
    """Register the models in the MERBench checkout at `path` (see the module docstring)."""
    models = _parse_models(models)
    checkout = locate(path)
    root = checkout.root
    manifest = load_manifest(root)
    edits = plan_install(checkout, models, manifest)
    messages = [f"warning: {name} could not be parsed and was left alone" for name in checkout.skipped]
    problems = []
    shims = {shim_path(name) for name in DEFAULT_MODELS}
    for edit in edits:
        if edit.after is None:
            continue
        pristine = None if edit.rel in shims or edit.before is None else strip_blocks(edit.before, edit.rel)
        problems += verify_text(edit.rel, edit.after, models, pristine)
    if problems:
        raise MERBenchError("the edits failed their checks; nothing was written:\n  " + "\n  ".join(problems))
    changed = [edit for edit in edits if edit.changed]
    if dry_run:
        messages.append(f"dry run: {len(changed)} file(s) would change in {root}" if changed else f"dry run: nothing to change in {root}")
        return Result(root, edits, messages)
    if not changed:
        messages.append(f"{', '.join(models)} already installed in {root}; nothing changed")
        return Result(root, edits, messages)

    state = root / STATE_DIR
    manifest = manifest or {"tool": "armer.merbench", "files": {}}
    for edit in changed:
        entry = manifest["files"].get(edit.rel)
        before = None if edit.before is None else edit.before.encode("utf-8")
        if entry is not None and _sha(before) == entry.get("installed_sha256"):
            continue  # as the last install left it: the backup still holds the original
        # First touch, or changed by someone since the last install: the original is the file
        # without our blocks (byte-identical to the file itself on a first install).
        if edit.before is None or edit.before.startswith(SHIM_TAG):
            original = None  # a file install creates (or created before its record was lost)
        else:
            original = before if not has_blocks(edit.before) else strip_blocks(edit.before, edit.rel).encode("utf-8")
        if original is not None:
            backup = state / "backup" / edit.rel
            backup.parent.mkdir(parents=True, exist_ok=True)
            backup.write_bytes(original)
        manifest["files"][edit.rel] = {"original_sha256": _sha(original)}
    _write_all(root, [(e.rel, None if e.after is None else e.after.encode("utf-8")) for e in changed])
    for edit in changed:
        manifest["files"][edit.rel]["installed_sha256"] = _sha(None if edit.after is None else edit.after.encode("utf-8"))
    manifest.update(version=_version(), models=list(models))
    (state / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    (state / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    on_disk = [f"{e.rel} differs from what was written" for e in edits if _read(root / e.rel) != e.after]
    if on_disk:
        raise MERBenchError("install could not be confirmed: " + "; ".join(on_disk))
    messages.append(f"installed {', '.join(models)} into {root}: changed {', '.join(e.rel for e in changed)}")
    messages.append(f"backups of the originals: {state / 'backup'} (undo: python -m armer.merbench uninstall {root})")
    return Result(root, edits, messages)


def plan_uninstall(root: Path, manifest: dict | None, force: bool) -> tuple[list[Edit], list[str]]:
    edits, messages = [], []
    if manifest is None:  # no record (state folder deleted): remove whatever carries our markers
        candidates = [MODELS_INIT, DATA_INIT, TUNE_YAML] + [p.name for p in sorted(root.glob("main*.py"))]
        for rel in candidates:
            current = _read(root / rel)
            if current is not None and has_blocks(current):
                edits.append(Edit(rel, current, strip_blocks(current, rel)))
        for name in DEFAULT_MODELS:
            current = _read(root / shim_path(name))
            if current is not None and current.startswith(SHIM_TAG):
                edits.append(Edit(shim_path(name), current, None))
        return edits, messages
    backup_dir = root / STATE_DIR / "backup"
    for rel, entry in sorted(manifest["files"].items()):
        path = root / rel
        current_bytes = path.read_bytes() if path.is_file() else None
        current = None if current_bytes is None else current_bytes.decode("utf-8")
        sha = _sha(current_bytes)
        if entry["original_sha256"] is None:
            original = None
        else:
            backup = backup_dir / rel
            original = backup.read_bytes().decode("utf-8") if backup.is_file() else None
            if original is None or _sha(original.encode("utf-8")) != entry["original_sha256"]:
                raise MERBenchError(
                    f"the backup of {rel} ({backup}) is missing or damaged; nothing was changed. Delete "
                    f"{root / STATE_DIR} to fall back to removing the marked armer blocks from the files")
        if sha == entry.get("installed_sha256") or sha == entry["original_sha256"]:
            edits.append(Edit(rel, current, original))
            continue
        # changed since install
        if current is None:
            messages.append(f"{rel} was deleted after install; left deleted")
            continue
        if original is None:  # a shim we created, edited since
            if current.startswith(SHIM_TAG) or force:
                edits.append(Edit(rel, current, None))
            else:
                raise MERBenchError(f"{rel} was written by install and edited since; remove it by hand or pass --force")
            continue
        try:
            stripped = strip_blocks(current, rel)
            if rel.endswith(".py"):
                _compile_check(stripped, rel)
        except MERBenchError as error:
            if not force:
                raise MERBenchError(
                    f"{rel} was changed after install and its armer-merbench blocks cannot be removed ({error}). "
                    f"The original is in {backup_dir / rel}; pass --force to restore it (your version is kept as "
                    f"{rel}.armer-modified). Nothing was changed."
                ) from error
            edits.append(Edit(rel + ".armer-modified", None, current))
            edits.append(Edit(rel, current, original))
            messages.append(f"{rel}: restored the original; your changed version is {rel}.armer-modified")
            continue
        edits.append(Edit(rel, current, stripped))
        messages.append(f"{rel} was changed after install: removed the armer blocks and kept your other changes")
    return edits, messages


def uninstall(path: str | os.PathLike, dry_run: bool = False, force: bool = False) -> Result:
    """Undo `install`: originals back from the backup, shims removed, the state folder removed."""
    checkout_root = Path(path).expanduser().resolve()
    manifest = load_manifest(checkout_root) if checkout_root.is_dir() else None
    if manifest is None:
        locate(checkout_root)  # a clear error if this is not MERBench at all
    edits, messages = plan_uninstall(checkout_root, manifest, force)
    changed = [edit for edit in edits if edit.changed]
    if dry_run:
        messages.append(f"dry run: {len(changed)} file(s) would change in {checkout_root}")
        return Result(checkout_root, edits, messages)
    if not changed and manifest is None:
        messages.append(f"nothing of armer is installed in {checkout_root}")
        return Result(checkout_root, edits, messages)
    _write_all(checkout_root, [(e.rel, None if e.after is None else e.after.encode("utf-8")) for e in changed])
    shutil.rmtree(checkout_root / STATE_DIR, ignore_errors=True)
    messages.append(f"uninstalled from {checkout_root}: " + (", ".join(e.rel for e in changed) or "no file needed changing"))
    return Result(checkout_root, edits, messages)


def status(path: str | os.PathLike) -> list[str]:
    checkout = locate(path)
    manifest = load_manifest(checkout.root)
    if manifest is None:
        return [f"armer is not installed in {checkout.root}"]
    models = tuple(manifest.get("models", DEFAULT_MODELS))
    lines = [f"installed in {checkout.root}: {', '.join(models)} (armer {manifest.get('version')})"]
    for rel, entry in sorted(manifest["files"].items()):
        data = (checkout.root / rel).read_bytes() if (checkout.root / rel).is_file() else None
        state = "as installed" if _sha(data) == entry.get("installed_sha256") else "CHANGED since install"
        lines.append(f"  {rel}: {state}")
    for rel in [MODELS_INIT, DATA_INIT, TUNE_YAML] + checkout.scripts:
        lines += [f"  problem: {p}" for p in verify_text(rel, _read(checkout.root / rel) or "", models)]
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
    model = get_models(args)
    batch = {'audios': torch.randn(4, 8), 'texts': torch.randn(4, 12), 'videos': torch.randn(4, 6)}
    batch['videos'][0] = 0  # a missing modality, as MERBench fills it
    model.train()
    features, emos_out, vals_out, interloss = model(batch)
    (emos_out.sum() + vals_out.sum() + interloss).backward()
    assert tuple(emos_out.shape) == (4, 6) and tuple(vals_out.shape) == (4, 1), (emos_out.shape, vals_out.shape)
    assert model.model.grad_clip == -1
    print('ok', name, type(model.model).__name__)
"""


def check(path: str | os.PathLike, models: Iterable[str] | str | None = None, timeout: float = 300) -> list[str]:
    """Import the models the way MERBench does (in a fresh interpreter in the checkout) and run one step."""
    checkout = locate(path)
    manifest = load_manifest(checkout.root)
    models = _parse_models(models if models is not None else (manifest or {}).get("models"))
    problems = []
    for rel in [MODELS_INIT, DATA_INIT, TUNE_YAML] + checkout.scripts:
        problems += verify_text(rel, _read(checkout.root / rel) or "", models)
    if problems:
        raise MERBenchError("the MERBench files are not as install leaves them:\n  " + "\n  ".join(problems))
    run = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, *models], cwd=checkout.root,
        capture_output=True, text=True, timeout=timeout,
    )
    if run.returncode != 0:
        raise MERBenchError(
            f"importing the models from MERBench failed (in {checkout.root}, {sys.executable}):\n"
            + (run.stderr.strip() or run.stdout.strip())[-3000:]
        )
    return [line for line in run.stdout.splitlines() if line.startswith("ok")]


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m armer.merbench",
        description="Register AttentionRobustV2 (attention_robust_v2) and its V1 baseline (attention_robust) "
        "in a MERBench checkout, so that `main-release.py --model attention_robust_v2` trains it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_install = commands.add_parser("install", help="edit MERBench to register the models (backups kept)")
    p_install.add_argument("path", help="the MERBench folder (with main-release.py and toolkit/)")
    p_install.add_argument("--models", default=",".join(DEFAULT_MODELS),
                           help=f"comma-separated subset of {','.join(DEFAULT_MODELS)} (default: both)")
    p_install.add_argument("--dry-run", action="store_true", help="print the edits as a diff; write nothing")
    p_install.add_argument("--no-check", action="store_true", help="skip importing the model in MERBench afterwards")
    p_uninstall = commands.add_parser("uninstall", help="restore the files install edited")
    p_uninstall.add_argument("path")
    p_uninstall.add_argument("--dry-run", action="store_true", help="print what would be restored; write nothing")
    p_uninstall.add_argument("--force", action="store_true",
                             help="restore backups even over files whose armer blocks were damaged since install")
    p_status = commands.add_parser("status", help="what is installed and whether the files still match")
    p_status.add_argument("path")
    p_check = commands.add_parser("check", help="import the models from MERBench and run one training step")
    p_check.add_argument("path")
    args = parser.parse_args(argv)

    try:
        if args.command == "install":
            result = install(args.path, args.models, dry_run=args.dry_run)
            if args.dry_run:
                for edit in result.edits:
                    if edit.changed:
                        sys.stdout.write(edit.diff())
            print("\n".join(result.messages))
            if not args.dry_run and not args.no_check:
                try:
                    print("\n".join(check(result.root, args.models)))
                except (MERBenchError, subprocess.TimeoutExpired) as error:
                    print(f"error: the files are installed and verified, but the import check failed: {error}\n"
                          f"Fix the environment (is armer installed in this Python?) and run "
                          f"`python -m armer.merbench check {result.root}`, or undo with "
                          f"`python -m armer.merbench uninstall {result.root}`.", file=sys.stderr)
                    return 1
        elif args.command == "uninstall":
            result = uninstall(args.path, dry_run=args.dry_run, force=args.force)
            if args.dry_run:
                for edit in result.edits:
                    if edit.changed:
                        sys.stdout.write(edit.diff())
            print("\n".join(result.messages))
        elif args.command == "status":
            print("\n".join(status(args.path)))
        elif args.command == "check":
            print("\n".join(check(args.path)))
    except MERBenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
