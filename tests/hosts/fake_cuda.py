"""A fake CUDA device for CPU-only machines: tensors that say they live on ``cuda:0``.

PyTorch's ``FakeTensorMode`` cannot stand in here: on a CPU-only build it refuses some
CUDA ops outright, and it has no data, so ``.item()`` (every logged statistic) fails. A
:class:`FakeCuda` tensor is an ordinary CPU tensor that reports ``device == cuda:0``; inside
:func:`fake_cuda` every op that meets a fake-CUDA tensor and a CPU tensor with dimensions
fails as it would on a GPU ("Expected all tensors to be on the same device"), while CPU
scalars (0-dim), indexing and copies across devices pass, as CUDA allows them. Factory
functions given ``device="cuda"``, ``.cuda()`` and ``.to("cuda")`` make fake-CUDA tensors;
``Module.cuda()`` turns a module's parameters (keeping their identity, as an optimiser
built before expects) and buffers fake.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda:0")

# Ops a real GPU allows between a CUDA tensor and a CPU one (or that hold no data).
_ANY_DEVICE = {
    "__get__", "__set__", "__getitem__", "__setitem__", "copy_", "_has_compatible_shallow_copy_type",
    "__repr__", "__format__", "numpy", "tolist", "item", "__float__", "__int__", "__bool__", "__len__",
    "size", "dim", "numel", "__index__", "is_floating_point", "detach", "requires_grad_", "data_ptr",
    "untyped_storage", "_typed_storage", "storage", "element_size", "stride", "is_contiguous",
}


class FakeCuda(torch.Tensor):
    @property
    def device(self):
        return CUDA

    @property
    def is_cuda(self):
        return True

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            ret = func(*args, **(kwargs or {}))
        # Gradients and getters too: what comes out of a fake-CUDA computation is fake CUDA.
        return tree_map(lambda x: x.as_subclass(FakeCuda) if type(x) is torch.Tensor else x, ret)


class FakeCudaParameter(FakeCuda, torch.nn.Parameter):
    pass


def _device_type(value) -> str | None:
    if isinstance(value, torch.Tensor):
        return value.device.type
    if isinstance(value, (str, torch.device)):
        return torch.device(value).type
    return None


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(torch.Tensor) if isinstance(t, FakeCuda) else t


class _Mode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name in ("to", "cuda", "cpu") and args and isinstance(args[0], torch.Tensor):
            return self._move(name, args, kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if name not in _ANY_DEVICE and any(isinstance(t, FakeCuda) for t in tensors):
            cpu = [t for t in tensors if not isinstance(t, FakeCuda) and t.dim() > 0]
            if cpu:
                raise RuntimeError("Expected all tensors to be on the same device, but found at least two "
                                   f"devices, cuda:0 and cpu! (fake CUDA, in {name})")
        make_fake = _device_type(kwargs.get("device")) == "cuda"
        if make_fake:
            kwargs["device"] = "cpu"
        out = func(*args, **kwargs)
        if make_fake:
            out = tree_map(lambda x: x.as_subclass(FakeCuda) if type(x) is torch.Tensor else x, out)
        return out

    @staticmethod
    def _move(name, args, kwargs):
        tensor, rest = args[0], list(args[1:])
        target = {"cuda": "cuda", "cpu": "cpu"}.get(name)
        if name == "to":
            for value in [kwargs.pop("device", None), *rest]:
                target = _device_type(value) or target
            dtypes = [a for a in rest if isinstance(a, torch.dtype)] + [a.dtype for a in rest if isinstance(a, torch.Tensor)]
            for key in ("non_blocking", "copy", "memory_format"):
                kwargs.pop(key, None)
            out = _plain(tensor).to(*dtypes[:1], **kwargs)
        else:
            out = _plain(tensor)
        if target is None:
            target = "cuda" if isinstance(tensor, FakeCuda) else "cpu"
        with torch._C.DisableTorchFunction():
            return out.as_subclass(FakeCuda) if target == "cuda" else out


def _module_cuda(module: torch.nn.Module, device=None) -> torch.nn.Module:
    for sub in module.modules():
        for p in sub._parameters.values():
            if p is not None:
                p.__class__ = FakeCudaParameter
        for key, buf in list(sub._buffers.items()):
            if buf is not None:
                sub._buffers[key] = buf.as_subclass(FakeCuda)
    return module


@contextlib.contextmanager
def fake_cuda(monkeypatch):
    """Within: ``.cuda()`` and ``device="cuda"`` give fake-CUDA tensors (see module docstring)."""
    monkeypatch.setattr(torch.nn.Module, "cuda", _module_cuda)
    with _Mode():
        yield


def to_fake_cuda(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_subclass(FakeCuda)
