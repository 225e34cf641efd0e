"""Layers for the DSL: ``Module`` and the usual building blocks, torch-style.

A ``Module`` holds its weights as float32 numpy arrays in plain attributes and computes in
``forward`` with the ``dsl.nn`` functions, so calling a layer while tracing adds its ops to the
graph with the weights as constants. Submodules are attributes too (or lists of modules, like
torch's ``ModuleList``); no registration and no ``super().__init__()`` call are needed::

    class Net(dsl.Module):
        def __init__(self) -> None:
            self.body = dsl.Sequential(dsl.Linear(784, 100), dsl.ReLU(), dsl.Linear(100, 10))

        def forward(self, x: dsl.Tensor) -> dsl.Tensor:
            return dsl.nn.log_softmax(self.body(x))

    model = dsl.trace(Net(), x=dsl.f32["batch", 784])

Weight names follow torch (``body.0.weight``; a ``Sequential`` names its entries by index), so
``net.load_state_dict(torch_net.state_dict())`` copies a torch model's weights in. Every array
attribute of a module is part of its state (torch's parameters and buffers alike). New weights
are initialized like torch's defaults, drawn from ``rng`` (``np.random.default_rng(0)`` when
None); composite layers pass their generator on, so their children differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from . import nn
from .errors import dsl_error
from .tensor import Tensor

Rng = np.random.Generator | int | None
Pair = int | tuple[int, int]


def _generator(rng: Rng) -> np.random.Generator:
    return np.random.default_rng(0 if rng is None else rng)


def _kaiming_uniform(rng: np.random.Generator, fan_in: int, shape: tuple[int, ...]) -> np.ndarray:
    """torch's default for Linear and Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (``kaiming_uniform_(a=sqrt(5))`` reduces to this bound)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Module:
    """Base class of every layer: subclass it and define ``forward``."""

    # Keys torch keeps in a state dict that mean nothing at inference for this layer:
    # load_state_dict accepts and ignores them.
    torch_only_state: ClassVar[tuple[str, ...]] = ()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct submodules: module attributes, and the entries of list or tuple attributes
        holding modules (named ``attribute.index``), in assignment order."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for index, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{index}", item

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (named ``prefix``) and every submodule, depth first, with qualified names."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(_join(prefix, name))

    def parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every weight as ``(qualified name, array)``, e.g. ``("attn.in_proj_bias", ...)``."""
        for qualified, _, _, array in self._slots():
            yield qualified, array

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights by qualified name (the arrays themselves, not copies)."""
        return dict(self.parameters())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace every weight with a copy of ``state[name]`` (numpy arrays, or anything
        ``np.asarray`` takes, such as the CPU tensors of a torch ``state_dict()``).

        The names must match exactly (torch's training-only entries such as BatchNorm's
        ``num_batches_tracked`` are ignored), as must the shapes; values are cast to the weight's
        dtype. Nothing is changed unless everything fits: one ``DSLError`` (located at the
        caller's line) lists every missing and unexpected name and every mismatched shape.
        """
        slots = {qualified: (module, attr, array) for qualified, module, attr, array
                 in self._slots()}
        ignored = {_join(prefix, key) for prefix, module in self.named_modules()
                   for key in module.torch_only_state}
        missing = [name for name in slots if name not in state]
        unexpected = [name for name in state if name not in slots and name not in ignored]
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing))
        if unexpected:
            problems.append("unexpected " + ", ".join(unexpected))
        updates = []
        for name, (module, attr, current) in slots.items():
            if name not in state:
                continue
            given = np.asarray(state[name])
            if given.shape != current.shape:
                problems.append(f"{name} has shape {list(given.shape)} in the state dict, "
                                f"{list(current.shape)} in the model")
            elif not np.can_cast(given.dtype, current.dtype, casting="same_kind"):
                problems.append(f"{name} has dtype {given.dtype} in the state dict, "
                                f"{current.dtype} in the model")
            else:
                updates.append((module, attr, given.astype(current.dtype)))
        if problems:
            raise dsl_error(f"{type(self).__name__}.load_state_dict", "; ".join(problems))
        for module, attr, value in updates:
            setattr(module, attr, value)

    def _slots(self) -> Iterator[tuple[str, Module, str, np.ndarray]]:
        """(qualified name, owning module, attribute, array) for every weight."""
        for prefix, module in self.named_modules():
            for attr, value in vars(module).items():
                if isinstance(value, np.ndarray):
                    yield _join(prefix, attr), module, attr, value


class Linear(Module):
    """``y = x @ weight.T + bias``; weight ``[out_features, in_features]``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: Rng = None) -> None:
        generator = _generator(rng)
        self.in_features, self.out_features = in_features, out_features
        self.weight = _kaiming_uniform(generator, in_features, (out_features, in_features))
        self.bias = _kaiming_uniform(generator, in_features, (out_features,)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return nn.linear(x, self.weight, self.bias)


def _pair(value: Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


class Conv2d(Module):
    """2-D convolution over NCHW input; weight ``[out, in / groups, kh, kw]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Pair, stride: Pair = 1,
                 padding: Pair = 0, dilation: Pair = 1, groups: int = 1, bias: bool = True, *,
                 rng: Rng = None) -> None:
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise dsl_error("Conv2d", f"groups={groups} must divide in_channels={in_channels} "
                                      f"and out_channels={out_channels}")
        generator = _generator(rng)
        kh, kw = _pair(kernel_size)
        fan_in = in_channels // groups * kh * kw
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups = groups
        self.weight = _kaiming_uniform(generator, fan_in,
                                       (out_channels, in_channels // groups, kh, kw))
        self.bias = _kaiming_uniform(generator, fan_in, (out_channels,)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return nn.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                         dilation=self.dilation, groups=self.groups)


class BatchNorm2d(Module):
    """Inference-mode batch normalization over the channels of NCHW input, from the running
    statistics (initially mean 0, variance 1) and the affine weight (1) and bias (0)."""

    torch_only_state = ("num_batches_tracked",)

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        self.eps = eps
        self.weight = np.ones(num_features, np.float32)
        self.bias = np.zeros(num_features, np.float32)
        self.running_mean = np.zeros(num_features, np.float32)
        self.running_var = np.ones(num_features, np.float32)

    def forward(self, x: Tensor) -> Tensor:
        return nn.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                             eps=self.eps)


class LayerNorm(Module):
    """Normalization over the trailing ``normalized_shape`` dims, then weight (1) and bias (0)."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5) -> None:
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        self.normalized_shape = tuple(shape)
        self.eps = eps
        self.weight = np.ones(self.normalized_shape, np.float32)
        self.bias = np.zeros(self.normalized_shape, np.float32)

    def forward(self, x: Tensor) -> Tensor:
        return nn.layer_norm(x, self.normalized_shape, self.weight, self.bias, eps=self.eps)


class Embedding(Module):
    """A lookup table ``[num_embeddings, embedding_dim]`` (initialized N(0, 1), as torch)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, rng: Rng = None) -> None:
        self.weight = _generator(rng).standard_normal(
            (num_embeddings, embedding_dim)).astype(np.float32)

    def forward(self, ids: Tensor) -> Tensor:
        return nn.embedding(ids, self.weight)


class Sequential(Module):
    """Applies its entries in order; entries are modules or plain callables such as
    ``dsl.nn.relu``. Weights are named by entry index (``"2.weight"``), as torch names them."""

    def __init__(self, *layers: Module | Callable[[Tensor], Tensor]) -> None:
        self.layers = list(layers)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Module):
                yield str(index), layer

    def __getitem__(self, index: int) -> Module | Callable[[Tensor], Tensor]:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module | Callable[[Tensor], Tensor]]:
        return iter(self.layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return nn.relu(x)


class GELU(Module):
    """GELU, exact (``approximate="none"``) or with the tanh approximation."""

    def __init__(self, approximate: str = "none") -> None:
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return nn.gelu(x, approximate=self.approximate)


class Flatten(Module):
    """Flattens the dims from ``start_dim`` on into one."""

    def __init__(self, start_dim: int = 1) -> None:
        self.start_dim = start_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim)


class MaxPool2d(Module):
    def __init__(self, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> None:
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return nn.max_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding)


class AvgPool2d(Module):
    def __init__(self, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0,
                 count_include_pad: bool = True) -> None:
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.count_include_pad = count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        return nn.avg_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding,
                             count_include_pad=self.count_include_pad)


class Dropout(Module):
    """The identity: models are traced for inference (``p`` is checked and kept, as torch's)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return nn.dropout(x, self.p)


class MultiHeadAttention(Module):
    """Multi-head attention over batch-first ``[..., L, E]`` inputs, with the weights of torch's
    ``nn.MultiheadAttention``: ``in_proj_weight [3E, E]`` (query, key, value rows),
    ``in_proj_bias [3E]``, ``out_proj.weight [E, E]``, ``out_proj.bias [E]``.

    ``forward(query, key=None, value=None, mask=None)`` returns the attention output only (torch
    also returns the weights); the key defaults to the query (self-attention), the value to the
    key. ``mask`` follows ``dsl.nn.scaled_dot_product_attention``: a bool mask is True where
    attention is *allowed* (torch's ``attn_mask`` is the opposite), a float mask is added to the
    scores. ``causal=True`` masks future positions instead (a mask and ``causal`` exclude each
    other, as in torch's ``scaled_dot_product_attention``).
    """

    def __init__(self, embed_dim: int, num_heads: int, causal: bool = False, *,
                 rng: Rng = None) -> None:
        if embed_dim % num_heads:
            raise dsl_error("MultiHeadAttention", f"embed_dim={embed_dim} is not divisible by "
                                                  f"num_heads={num_heads}")
        generator = _generator(rng)
        self.embed_dim, self.num_heads, self.causal = embed_dim, num_heads, causal
        # torch: xavier_uniform_ on the [3E, E] projection, zero biases, out_proj as Linear.
        bound = math.sqrt(6.0 / (4 * embed_dim))
        self.in_proj_weight = generator.uniform(
            -bound, bound, (3 * embed_dim, embed_dim)).astype(np.float32)
        self.in_proj_bias = np.zeros(3 * embed_dim, np.float32)
        self.out_proj = Linear(embed_dim, embed_dim, rng=generator)
        self.out_proj.bias = np.zeros(embed_dim, np.float32)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                mask: Tensor | np.ndarray | None = None) -> Tensor:
        key = query if key is None else key
        value = key if value is None else value
        e = self.embed_dim
        q, k, v = (self._split_heads(nn.linear(source, self.in_proj_weight[i * e:(i + 1) * e],
                                               self.in_proj_bias[i * e:(i + 1) * e]))
                   for i, source in enumerate((query, key, value)))
        attended = nn.scaled_dot_product_attention(q, k, v, mask=mask, causal=self.causal)
        return self.out_proj(self._merge_heads(attended))

    def _split_heads(self, x: Tensor) -> Tensor:
        """``[..., L, E]`` -> ``[..., heads, L, E / heads]``."""
        lead = x.ndim - 2
        split = x.reshape(*x.shape[:-1], self.num_heads, self.embed_dim // self.num_heads)
        return split.transpose(*range(lead), lead + 1, lead, lead + 2)

    def _merge_heads(self, x: Tensor) -> Tensor:
        """``[..., heads, L, E / heads]`` -> ``[..., L, E]``."""
        lead = x.ndim - 3
        merged = x.transpose(*range(lead), lead + 1, lead, lead + 2)
        return merged.reshape(*merged.shape[:-2], self.embed_dim)


class TransformerBlock(Module):
    """A pre-norm transformer encoder block (torch's ``TransformerEncoderLayer`` with
    ``norm_first=True, activation="gelu", batch_first=True``, at inference)::

        x = x + attn(ln1(x))
        x = x + mlp(ln2(x))          # mlp = Linear(dim, hidden), GELU, Linear(hidden, dim)
    """

    def __init__(self, dim: int, heads: int, hidden: int, causal: bool = False,
                 eps: float = 1e-5, *, rng: Rng = None) -> None:
        generator = _generator(rng)
        self.ln1 = LayerNorm(dim, eps)
        self.attn = MultiHeadAttention(dim, heads, causal, rng=generator)
        self.ln2 = LayerNorm(dim, eps)
        self.mlp = Sequential(Linear(dim, hidden, rng=generator), GELU(),
                              Linear(hidden, dim, rng=generator))

    def forward(self, x: Tensor, mask: Tensor | np.ndarray | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.mlp(self.ln2(x))
