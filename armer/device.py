"""Where models run: ``--device auto|cpu|cuda|cuda:N`` for every command, and ``resolve_device``.

    >>> from armer.device import resolve_device
    >>> resolve_device("auto")      # CUDA when torch sees a GPU, else the CPU
    device(type='cpu')

``auto`` is CUDA when ``torch.cuda.is_available()``, else the CPU; ``cuda`` is the current CUDA
device, ``cuda:N`` the N-th. Asking for CUDA where torch sees none is a ``DeviceError`` that says
so, never a silent fall-back to the CPU. The default of every command and constructor stays
``cpu`` (``DEFAULT_DEVICE``): outputs do not change unless a device is asked for. None of this has
run on a GPU here (README).
"""
from __future__ import annotations

import argparse
import itertools
import re
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import torch

DEFAULT_DEVICE = "cpu"
DEVICE_METAVAR = "auto|cpu|cuda|cuda:N"
DEVICE_HELP = ("where the models run: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N "
               "(default: %(default)s)")
_SPEC = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")

DeviceSpec = Union[str, "torch.device"]


class DeviceError(ValueError):
    """A device that is not auto, cpu, cuda or cuda:N, or CUDA asked for where torch sees none."""


def parse_device(spec: DeviceSpec) -> tuple[str, int | None]:
    """(``"auto"``, ``"cpu"`` or ``"cuda"``, the CUDA index or None) of ``spec``, checked without
    importing torch. Raises DeviceError for anything else."""
    text = str(spec).strip().lower()
    match = _SPEC.fullmatch(text)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"--device {spec}: unknown device; use auto, cpu, cuda or cuda:N")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def resolve_device(spec: DeviceSpec = "auto") -> torch.device:
    """The ``torch.device`` that ``spec`` (a string or a torch.device) names; CUDA devices always
    with their index (``cuda`` -> ``cuda:<current device>``).

    Raises:
        DeviceError: an unknown spec, CUDA asked for where torch sees no CUDA device, or an index
            past the last device.
    """
    kind, index = parse_device(spec)
    import torch

    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {spec}: torch sees no CUDA device; use --device cpu or auto")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise DeviceError(f"--device {spec}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", torch.cuda.current_device() if index is None else index)


def device_name(spec: DeviceSpec) -> str:
    """The resolved device as a string (``"cpu"``, ``"cuda:0"``); ``cpu`` resolves without importing torch."""
    return "cpu" if parse_device(spec)[0] == "cpu" else str(resolve_device(spec))


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for one with neither)."""
    import torch

    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _device_argument(spec: str) -> str:
    try:
        return device_name(spec)
    except DeviceError as err:  # argparse shows an ArgumentTypeError's message as it is
        raise argparse.ArgumentTypeError(str(err).removeprefix("--device ")) from err


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                        default: str = DEFAULT_DEVICE) -> None:
    """``--device auto|cpu|cuda|cuda:N``; the parsed value is the resolved device's name (``cpu``,
    ``cuda:0``), a bad or unavailable one exits 2 with ``argument --device: <spec>: <why>``."""
    parser.add_argument("--device", default=default, type=_device_argument, metavar=DEVICE_METAVAR,
                        help=DEVICE_HELP)
