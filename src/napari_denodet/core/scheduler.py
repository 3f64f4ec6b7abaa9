"""Checking a dask scheduler given by address before a batch relies on it.

:func:`check_scheduler` connects, goes through the comm handshake and asks the
scheduler who it is, all within one timeout (:data:`SCHEDULER_TIMEOUT`): a peer that
accepts and never answers, a server of another protocol (HTTP...) or a bad address end
in one line, instead of a hang, a ``MemoryError`` traceback or a client that takes
tens of seconds to give up when it is collected. :class:`distributed.Client` itself
has no limit on the handshake.
"""

from __future__ import annotations

import threading
from typing import Any

from napari_denodet.core.errors import InputError

#: Seconds to connect to a scheduler given by address and hear it answer as one.
SCHEDULER_TIMEOUT = 15.0


def check_scheduler(address: str, timeout: float | None = None) -> None:
    """Make sure a dask scheduler answers at ``address``, within one timeout.

    Connecting, the comm handshake and the scheduler's ``identity`` reply together get
    ``timeout`` seconds: a peer that accepts and never answers, a server that speaks
    another protocol (HTTP...), a typo in the address all end here in one line.

    Parameters
    ----------
    address : str
        ``tcp://host:port`` (or another dask comm address).
    timeout : float, optional
        Seconds; default :data:`SCHEDULER_TIMEOUT`.

    Raises
    ------
    InputError
        ``cannot reach the dask scheduler at ADDRESS (why)``.
    """
    import asyncio

    from dask.utils import parse_timedelta
    from distributed.comm.core import CommClosedError

    seconds = parse_timedelta(SCHEDULER_TIMEOUT if timeout is None else timeout, "s")

    def fail(why: str) -> InputError:
        return InputError(None, f"cannot reach the dask scheduler at {address} ({why})")

    if not address.strip():
        raise fail("the address is empty")
    try:
        _check_address(address)
    except ValueError as exc:
        raise fail(" ".join(str(exc).split())) from None

    async def ask() -> Any:
        from distributed.comm import connect
        from distributed.security import Security

        comm = await connect(address, timeout=seconds,
                             **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    outcome: dict[str, Any] = {}

    def run() -> None:  # its own thread and event loop: a caller may have one running
        try:
            outcome["answer"] = asyncio.run(asyncio.wait_for(ask(), seconds))
        except BaseException as exc:  # noqa: BLE001 - reported below, in one line
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="denodet-scheduler-check", daemon=True)
    thread.start()
    thread.join(seconds + 5)
    error = outcome.get("error")
    if thread.is_alive() or isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        raise fail(f"no answer within {seconds:g} s")
    if isinstance(error, OSError) and not isinstance(error, CommClosedError):
        raise fail(" ".join(str(error).split()) or type(error).__name__)
    answer = outcome.get("answer")
    if error is not None or not (isinstance(answer, dict) and "type" in answer):
        # Garbage read as a frame length (a MemoryError of exbibytes), a closed stream,
        # a reply that is no identity: something else listens there.
        raise fail("the server there does not answer as a dask scheduler")


def _check_address(address: str) -> None:
    # A malformed address (no port...) raises ValueError with a message fit for users.
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme in ("tcp", "tls"):
        parse_host_port(location)
