"""Where the network runs and in which arithmetic: device and precision choices.

One place for the rules the engine, fine-tuning and the faces share: ``"auto"`` picks
CUDA, then MPS, then the CPU; bfloat16 only on CPUs that compute it natively (elsewhere
oneDNN emulates it, slower than float32), float32 on GPUs.
"""

from __future__ import annotations

import torch

from napari_denodet.core.errors import InputError

#: Devices :func:`choose_device` accepts: ``"auto"`` or a torch device type.
DEVICES = ("auto", "cpu", "cuda", "mps")
_DEVICES = DEVICES[1:]
#: Arithmetic of the forward pass: ``"auto"`` (:func:`choose_precision`) or a torch dtype.
PRECISIONS = ("auto", "float32", "bfloat16")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """List the devices this machine can run the network on.

    Returns
    -------
    list of str
        ``"cpu"`` always, then ``"cuda"`` and ``"mps"`` when available.
    """
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if _mps_available():
        devices.append("mps")
    return devices


def choose_device(requested: str = "auto") -> torch.device:
    """Resolve a device name to a torch device that is available here.

    Parameters
    ----------
    requested : str
        ``"auto"`` (CUDA if available, else MPS if available, else CPU), ``"cpu"``,
        ``"cuda"`` (or ``"cuda:N"``) or ``"mps"``.

    Returns
    -------
    torch.device
        The device.

    Raises
    ------
    InputError
        When the name is unknown or the device is not available on this machine.
    """
    name = str(requested).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in _DEVICES:
        raise InputError(
            None, f"unknown device {requested!r}: use one of {', '.join(DEVICES)}"
        )
    available = available_devices()
    if device.type not in available:
        raise InputError(
            None,
            f"device {requested!r} is not available on this machine "
            f"(available: {', '.join(available)}); choose 'auto' or 'cpu'",
        )
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise InputError(
                None, f"device {requested!r} does not exist: this machine has {count} GPU(s)"
            )
    return device


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX instructions).

    Elsewhere oneDNN emulates bfloat16 and it is slower than float32. False when this
    torch build cannot tell.
    """
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, name, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:
            continue
    return False


def choose_precision(precision: str, device: torch.device) -> torch.dtype:
    """Resolve a precision name to the dtype the network runs in on ``device``.

    Parameters
    ----------
    precision : str
        ``"auto"``: bfloat16 on a CPU with native bfloat16 instructions
        (:func:`native_bfloat16`), float32 everywhere else (GPUs included); or
        ``"float32"`` / ``"bfloat16"`` as asked. Inputs and outputs of the network stay
        float32 either way; localisation and scores are computed in float32.
    device : torch.device
        Where the network runs.

    Raises
    ------
    InputError
        For an unknown precision name.
    """
    if precision not in PRECISIONS:
        raise InputError(None, f"precision must be one of {', '.join(PRECISIONS)}; "
                               f"got {precision!r}")
    if precision == "auto":
        native = device.type == "cpu" and native_bfloat16()
        return torch.bfloat16 if native else torch.float32
    return getattr(torch, precision)
