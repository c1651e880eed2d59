"""Backend registry and dispatch.

A backend is imported only when it is first used, so ``import fastmlp`` never pulls in
numba, cupy or the compiled extension.

Selection, in order of precedence:

1. ``with fastmlp.use_backend(name):`` -- per thread and per async task (a ``ContextVar``);
2. ``fastmlp.set_backend(name)`` -- the process-wide default;
3. ``FASTMLP_BACKEND``, read once at first use:

   ===========================  ==========================================================
   unset, empty or ``auto``     the fastest available CPU backend (``AUTO_ORDER``)
   one name                     that backend, required: ``BackendUnavailableError`` if not
   ``a,b,c``                    the first available, one warning naming each skipped one
   anything else                ``ValueError`` listing the known names
   ===========================  ==========================================================
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import _config
from ._outputs import empty_cache

if TYPE_CHECKING:
    from .base import Backend

__all__ = [
    "AUTO_ORDER",
    "BackendInfo",
    "BackendUnavailableError",
    "backends",
    "empty_cache",
    "get_backend",
    "set_backend",
    "use_backend",
]

# name -> ("module:Class", install hint). Registering a backend is one line here.
_REGISTRY: dict[str, tuple[str, str]] = {
    "numpy": ("fastmlp.backends.numpy_backend:NumpyBackend", "pip install fastmlp"),
    "cpp": ("fastmlp.backends.cpp_backend:CppBackend", "pip install fastmlp with a C++17 compiler (FASTMLP_STRICT_BUILD=1 shows why the build failed)"),
    "numba": ("fastmlp.backends.numba_backend:NumbaBackend", "pip install 'fastmlp[numba]'"),
    "cupy": ("fastmlp.backends.cupy_backend:CupyBackend", "pip install 'fastmlp[cupy]' (cupy-cuda13x: GPUs of compute capability 7.5+; older GPUs: cupy-cuda12x)"),
}

# The order `auto` tries, fastest first, as measured by `python -m fastmlp bench`.
# Never a GPU backend: `auto` stays on the CPU unless the user asks.
AUTO_ORDER: tuple[str, ...] = ("cpp", "numba", "numpy")


class BackendUnavailableError(ImportError):
    """A backend was asked for by name but cannot be loaded.

    Carries the original reason (``__cause__`` and :attr:`reason`) and the install hint.
    """

    def __init__(self, name: str, reason: str, hint: str):
        self.name = name
        self.reason = reason
        self.hint = hint
        super().__init__(f"fastmlp backend {name!r} is unavailable: {reason} (install: {hint})")


@dataclass(frozen=True)
class BackendInfo:
    """One row of :func:`backends`: what a backend is and which ops it runs natively."""

    name: str
    available: bool
    reason: str
    device: str = ""
    dtypes: tuple[str, ...] = ()
    native_ops: tuple[str, ...] = field(default_factory=tuple)
    reference_ops: tuple[str, ...] = field(default_factory=tuple)


_lock = threading.Lock()
_instances: dict[str, Backend] = {}
_errors: dict[str, BackendUnavailableError] = {}
_default: Backend | None = None
_current: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "fastmlp_backend", default=None
)


def known_names() -> tuple[str, ...]:
    """Names of every registered backend."""
    return tuple(_REGISTRY)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"unknown fastmlp backend {name!r}; known backends: {', '.join(_REGISTRY)}"
        )
    return name


def _load(name: str) -> Backend:
    """Import and instantiate backend `name` once; raise BackendUnavailableError if it can't."""
    _check_name(name)
    with _lock:
        if name in _instances:
            return _instances[name]
        if name in _errors:
            raise _errors[name]
        target, hint = _REGISTRY[name]
        module_name, _, class_name = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
            backend = cls()
        except Exception as exc:  # ImportError, OSError from a missing library, ...
            err = BackendUnavailableError(name, f"{type(exc).__name__}: {exc}", hint)
            err.__cause__ = exc
            _errors[name] = err
            raise err from exc
        _instances[name] = backend
        return backend


def _resolve_request(request: str) -> Backend:
    """Turn a FASTMLP_BACKEND value into a backend, following the table in the module doc."""
    if request in ("", "auto"):
        names = [n for n in AUTO_ORDER if n in _REGISTRY]
        for name in names:
            try:
                return _load(name)
            except BackendUnavailableError:
                continue
        raise BackendUnavailableError("auto", "no CPU backend could be loaded", "pip install fastmlp")
    names = [part.strip() for part in request.split(",")]
    for part in names:
        if part not in _REGISTRY:
            raise ValueError(
                f"FASTMLP_BACKEND={request!r}: unknown backend {part!r}; "
                f"known backends: {', '.join(_REGISTRY)} (or 'auto')"
            )
    if len(names) == 1:
        return _load(names[0])
    skipped: list[str] = []
    for name in names:
        try:
            backend = _load(name)
        except BackendUnavailableError as exc:
            skipped.append(f"{name} ({exc.reason})")
            continue
        if skipped:
            warnings.warn(
                f"FASTMLP_BACKEND={request!r}: using {name!r}; skipped " + "; ".join(skipped),
                RuntimeWarning,
                stacklevel=3,
            )
        return backend
    raise BackendUnavailableError(
        request, "none of the listed backends is available: " + "; ".join(skipped), "see `python -m fastmlp info`"
    )


def get_backend(name: str | None = None) -> Backend:
    """The backend in use, or the backend called `name`.

    Parameters
    ----------
    name : str, optional
        A registered backend name. When omitted: the ``use_backend`` context, else the
        ``set_backend`` default, else ``FASTMLP_BACKEND`` (read once, here, at first use).

    Raises
    ------
    BackendUnavailableError
        The requested backend cannot be loaded (with the reason and the install hint).
    ValueError
        Unknown name.
    """
    if name is not None:
        return _load(name)
    current = _current.get()
    if current is not None:
        return current
    global _default
    if _default is None:
        backend = _resolve_request(_config.backend_request())
        with _lock:
            if _default is None:
                _default = backend
    return _default


def set_backend(name: str) -> Backend:
    """Make backend `name` the process-wide default and return it (loads it now)."""
    global _default
    backend = _load(name)
    with _lock:
        _default = backend
    return backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Use backend `name` inside a ``with`` block (this thread / async task only).

    Blocks nest; leaving one restores the backend that was in use before it.
    """
    token = _current.set(_load(name))
    try:
        yield _current.get()  # type: ignore[misc]
    finally:
        _current.reset(token)


def _reset_for_tests() -> None:
    """Forget loaded backends, the default and the cached environment."""
    global _default
    with _lock:
        _instances.clear()
        _errors.clear()
        _default = None
    _config.reset()


def backends() -> dict[str, BackendInfo]:
    """Report every registered backend: availability and reason, device, dtypes, and which
    ops run natively versus through the inherited reference (derived from the class)."""
    from .base import Backend

    report: dict[str, BackendInfo] = {}
    for name in _REGISTRY:
        try:
            backend = _load(name)
        except BackendUnavailableError as exc:
            report[name] = BackendInfo(name, False, f"{exc.reason} (install: {exc.hint})")
            continue
        native, reference = [], []
        for op in Backend.op_names():
            overridden = inspect.getattr_static(type(backend), op) is not inspect.getattr_static(Backend, op)
            (native if overridden or backend.is_reference else reference).append(op)
        report[name] = BackendInfo(
            name,
            True,
            backend.describe(),
            backend.device,
            tuple(backend.dtypes),
            tuple(native),
            tuple(reference),
        )
    return report
