"""The DSL layers (``kiln.frontends.dsl.layers``) one at a time, with PyTorch as the oracle.

Each layer is paired with its torch.nn counterpart: the torch layer's weights (perturbed, so that
biases and normalization statistics are not the trivial zeros and ones) are copied in with
``load_state_dict(torch_layer.state_dict())``, the DSL layer is traced at the input's shape and
run with the reference executor, and the torch layer in eval mode on the same input is the
oracle. Also checked: weight names, order and shapes equal torch's; initialization follows
torch's defaults; ``load_state_dict``'s errors; a user-defined module composing layers.
``renamed`` and ``assert_matches`` serve test_dsl_models.py too.

Tolerance, float32 both sides: ``rtol=1e-5, atol=1e-5`` (the same math in float32; only the
summation order of dot products and reductions differs, a few ulps of values of order 1).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
tnn = torch.nn

from dslcheck import located  # noqa: E402
from torchcheck import assert_matches, renamed  # noqa: E402

from kiln.frontends import dsl  # noqa: E402
from kiln.frontends.dsl import layers  # noqa: E402
from kiln.frontends.dsl.errors import DSLError  # noqa: E402


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` in eval mode with U(-0.5, 0.5) noise added to every floating weight and
    statistic (variances stay positive: they start at 1)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for value in module.state_dict().values():
            if value.is_floating_point():
                value += torch.from_numpy(rng.uniform(-0.5, 0.5, value.shape).astype(np.float32))
    return module.eval()


def spec(array: np.ndarray) -> dsl.TensorSpec:
    return dsl.TensorSpec(array.dtype, array.shape)


def traced_output(fn: Callable[..., dsl.Tensor], **inputs: np.ndarray) -> np.ndarray:
    """``fn`` traced at the inputs' types and run with the reference executor."""
    model = dsl.trace(fn, **{name: spec(array) for name, array in inputs.items()})
    (output,) = model.reference(**inputs)
    return output


def torch_output(module: torch.nn.Module, *inputs: np.ndarray, **kwargs: object) -> np.ndarray:
    with torch.no_grad():
        produced = module(*(torch.from_numpy(a) for a in inputs), **kwargs)
    if isinstance(produced, tuple):  # MultiheadAttention: (output, weights)
        produced = produced[0]
    return produced.numpy()


def randn(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# (DSL layer, torch layer, input shape) for the layers that map one input to one output.
SINGLE_INPUT: dict[str, tuple[Callable[[], layers.Module], Callable[[], torch.nn.Module],
                              tuple[int, ...]]] = {
    "linear": (lambda: layers.Linear(7, 5), lambda: tnn.Linear(7, 5), (3, 4, 7)),
    "linear_no_bias": (lambda: layers.Linear(7, 5, bias=False),
                       lambda: tnn.Linear(7, 5, bias=False), (2, 7)),
    "conv2d": (lambda: layers.Conv2d(3, 8, 3), lambda: tnn.Conv2d(3, 8, 3), (2, 3, 9, 9)),
    "conv2d_strided_padded": (lambda: layers.Conv2d(3, 4, (3, 5), stride=2, padding=(1, 2)),
                              lambda: tnn.Conv2d(3, 4, (3, 5), stride=2, padding=(1, 2)),
                              (1, 3, 11, 10)),
    "conv2d_dilated_grouped": (
        lambda: layers.Conv2d(4, 6, 3, dilation=2, groups=2, bias=False),
        lambda: tnn.Conv2d(4, 6, 3, dilation=2, groups=2, bias=False), (2, 4, 10, 10)),
    "conv2d_depthwise": (lambda: layers.Conv2d(4, 4, 3, padding=1, groups=4),
                         lambda: tnn.Conv2d(4, 4, 3, padding=1, groups=4), (1, 4, 6, 6)),
    "batchnorm2d": (lambda: layers.BatchNorm2d(5), lambda: tnn.BatchNorm2d(5), (2, 5, 4, 3)),
    "batchnorm2d_eps": (lambda: layers.BatchNorm2d(3, eps=0.1),
                        lambda: tnn.BatchNorm2d(3, eps=0.1), (2, 3, 4, 4)),
    "layernorm": (lambda: layers.LayerNorm(6), lambda: tnn.LayerNorm(6), (2, 3, 6)),
    "layernorm_2d_shape": (lambda: layers.LayerNorm((3, 6), eps=1e-3),
                           lambda: tnn.LayerNorm((3, 6), eps=1e-3), (2, 3, 6)),
    "relu": (layers.ReLU, tnn.ReLU, (3, 8)),
    "gelu": (layers.GELU, tnn.GELU, (3, 8)),
    "gelu_tanh": (lambda: layers.GELU("tanh"), lambda: tnn.GELU("tanh"), (3, 8)),
    "flatten": (layers.Flatten, tnn.Flatten, (2, 3, 4, 5)),
    "flatten_from_2": (lambda: layers.Flatten(2), lambda: tnn.Flatten(2), (2, 3, 4, 5)),
    "maxpool2d": (lambda: layers.MaxPool2d(2), lambda: tnn.MaxPool2d(2), (2, 3, 8, 7)),
    "maxpool2d_strided_padded": (lambda: layers.MaxPool2d(3, stride=2, padding=1),
                                 lambda: tnn.MaxPool2d(3, stride=2, padding=1), (1, 2, 9, 9)),
    "avgpool2d": (lambda: layers.AvgPool2d(2), lambda: tnn.AvgPool2d(2), (2, 3, 8, 6)),
    "avgpool2d_padded": (lambda: layers.AvgPool2d(3, stride=2, padding=1),
                         lambda: tnn.AvgPool2d(3, stride=2, padding=1), (1, 2, 9, 8)),
    "avgpool2d_padded_exclusive": (
        lambda: layers.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        lambda: tnn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 9, 8)),
    "dropout": (layers.Dropout, tnn.Dropout, (4, 8)),
    "sequential": (lambda: layers.Sequential(layers.Linear(6, 8), layers.ReLU(),
                                             layers.Linear(8, 3)),
                   lambda: tnn.Sequential(tnn.Linear(6, 8), tnn.ReLU(), tnn.Linear(8, 3)),
                   (5, 6)),
    "nested_sequential": (
        lambda: layers.Sequential(layers.Sequential(layers.Linear(6, 8), layers.GELU()),
                                  layers.Linear(8, 3)),
        lambda: tnn.Sequential(tnn.Sequential(tnn.Linear(6, 8), tnn.GELU()), tnn.Linear(8, 3)),
        (5, 6)),
    # A plain function in a Sequential takes its index, as torch's ReLU module does.
    "sequential_with_function": (
        lambda: layers.Sequential(layers.Linear(6, 8), dsl.nn.relu, layers.Linear(8, 3)),
        lambda: tnn.Sequential(tnn.Linear(6, 8), tnn.ReLU(), tnn.Linear(8, 3)), (5, 6)),
    "multi_head_attention": (lambda: layers.MultiHeadAttention(16, 4),
                             lambda: tnn.MultiheadAttention(16, 4, batch_first=True), (2, 5, 16)),
}


@pytest.mark.parametrize("case", SINGLE_INPUT)
def test_layer_matches_torch(case: str) -> None:
    make_ours, make_theirs, shape = SINGLE_INPUT[case]
    ours, theirs = make_ours(), perturbed(make_theirs())
    ours.load_state_dict(theirs.state_dict())
    x = randn(*shape)
    if isinstance(theirs, tnn.MultiheadAttention):
        expected = torch_output(theirs, x, x, x, need_weights=False)
    else:
        expected = torch_output(theirs, x)
    assert_matches(traced_output(ours, x=x), expected)


@pytest.mark.parametrize("case", SINGLE_INPUT)
def test_state_names_order_and_shapes_match_torch(case: str) -> None:
    make_ours, make_theirs, _ = SINGLE_INPUT[case]
    ours = [(name, array.shape, array.dtype) for name, array in make_ours().parameters()]
    theirs = [(name, tuple(value.shape), np.dtype(np.float32))
              for name, value in make_theirs().state_dict().items()
              if name != "num_batches_tracked"]
    assert ours == theirs


def test_embedding_matches_torch() -> None:
    ours, theirs = layers.Embedding(10, 4), perturbed(tnn.Embedding(10, 4))
    ours.load_state_dict(theirs.state_dict())
    ids = np.random.default_rng(2).integers(0, 10, (3, 5), dtype=np.int64)
    assert_matches(traced_output(ours, ids=ids), torch_output(theirs, ids))


def test_cross_attention_with_other_lengths_matches_torch() -> None:
    ours, theirs = layers.MultiHeadAttention(8, 2), perturbed(tnn.MultiheadAttention(
        8, 2, batch_first=True))
    ours.load_state_dict(theirs.state_dict())
    query, key, value = randn(2, 3, 8, seed=1), randn(2, 6, 8, seed=2), randn(2, 6, 8, seed=3)
    expected = torch_output(theirs, query, key, value, need_weights=False)
    assert_matches(traced_output(ours, query=query, key=key, value=value), expected)


def test_causal_attention_matches_torch() -> None:
    ours, theirs = layers.MultiHeadAttention(8, 2, causal=True), perturbed(
        tnn.MultiheadAttention(8, 2, batch_first=True))
    ours.load_state_dict(theirs.state_dict())
    x = randn(2, 5, 8)
    future = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)  # torch: True = masked
    expected = torch_output(theirs, x, x, x, need_weights=False, attn_mask=future,
                            is_causal=True)
    assert_matches(traced_output(ours, x=x), expected)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_attention_mask_matches_torch(kind: str) -> None:
    """A bool mask is True where attention is allowed (torch's attn_mask: where it is not); a
    float mask is added to the scores in both."""
    ours, theirs = layers.MultiHeadAttention(8, 2), perturbed(tnn.MultiheadAttention(
        8, 2, batch_first=True))
    ours.load_state_dict(theirs.state_dict())
    x = randn(2, 4, 8)
    rng = np.random.default_rng(4)
    if kind == "bool":
        mask = rng.random((4, 4)) < 0.7
        mask[:, 0] = True  # every query attends somewhere
        torch_mask = torch.from_numpy(~mask)
    else:
        mask = rng.standard_normal((4, 4)).astype(np.float32)
        torch_mask = torch.from_numpy(mask)
    expected = torch_output(theirs, x, x, x, need_weights=False, attn_mask=torch_mask)
    assert_matches(traced_output(lambda x: ours(x, mask=mask), x=x), expected)


@pytest.mark.parametrize("causal", [False, True])
def test_transformer_block_matches_torch_pre_norm_encoder_layer(causal: bool) -> None:
    ours = layers.TransformerBlock(16, 4, 32, causal=causal)
    theirs = perturbed(tnn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation="gelu",
                                                   batch_first=True, norm_first=True))
    ours.load_state_dict(renamed(theirs.state_dict()))
    x = randn(2, 6, 16)
    if causal:
        expected = torch_output(theirs, x, src_mask=tnn.Transformer.generate_square_subsequent_mask(
            6), is_causal=True)
    else:
        expected = torch_output(theirs, x)
    assert_matches(traced_output(ours, x=x), expected)


def test_transformer_block_names_are_torch_encoder_layer_names_renamed() -> None:
    theirs = tnn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=True)
    ours = layers.TransformerBlock(16, 4, 32)
    assert sorted((n, a.shape) for n, a in ours.parameters()) == sorted(
        (n, tuple(v.shape)) for n, v in renamed(theirs.state_dict()).items())


class Tower(layers.Module):
    """A user-defined module: a layer attribute, a list of layers and a plain weight array."""

    def __init__(self) -> None:
        self.stem = layers.Linear(4, 8)
        self.blocks = [layers.Linear(8, 8, rng=seed) for seed in (1, 2)]
        self.scale = np.linspace(0.5, 2.0, 8, dtype=np.float32)

    def forward(self, x: dsl.Tensor) -> dsl.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = x + dsl.nn.gelu(block(x))
        return x * self.scale


class TorchTower(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = tnn.Linear(4, 8)
        self.blocks = tnn.ModuleList([tnn.Linear(8, 8) for _ in range(2)])
        self.register_buffer("scale", torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = x + tnn.functional.gelu(block(x))
        return x * self.scale


def test_user_defined_module_names_and_output_match_torch() -> None:
    ours, theirs = Tower(), perturbed(TorchTower())
    assert [(n, a.shape) for n, a in ours.parameters()] == [
        (n, tuple(v.shape)) for n, v in theirs.state_dict().items()]
    # A list of layers is not a module itself (torch's ModuleList is).
    assert [name for name, _ in ours.named_modules()] == [
        name for name, module in theirs.named_modules() if not isinstance(module, tnn.ModuleList)]
    ours.load_state_dict(theirs.state_dict())
    x = randn(3, 4)
    assert_matches(traced_output(ours, x=x), torch_output(theirs, x))


def test_named_modules_are_qualified_and_depth_first() -> None:
    block = layers.TransformerBlock(8, 2, 16)
    named = [(name, type(module).__name__) for name, module in block.named_modules()]
    assert named == [("", "TransformerBlock"), ("ln1", "LayerNorm"),
                     ("attn", "MultiHeadAttention"), ("attn.out_proj", "Linear"),
                     ("ln2", "LayerNorm"), ("mlp", "Sequential"), ("mlp.0", "Linear"),
                     ("mlp.1", "GELU"), ("mlp.2", "Linear")]


def test_sequential_indexes_and_iterates_its_entries() -> None:
    first, second = layers.Linear(2, 3), layers.ReLU()
    sequence = layers.Sequential(first, second, dsl.nn.relu)
    assert len(sequence) == 3 and sequence[0] is first and sequence[-1] is dsl.nn.relu
    assert list(sequence) == [first, second, dsl.nn.relu]


def test_load_state_dict_copies_casts_and_ignores_torch_training_state() -> None:
    norm = layers.BatchNorm2d(3)
    state = {"weight": np.arange(3, dtype=np.float64), "bias": np.ones(3),
             "running_mean": np.zeros(3, np.float32), "running_var": np.full(3, 2, np.float32),
             "num_batches_tracked": np.int64(7)}
    norm.load_state_dict(state)
    assert norm.weight.dtype == np.float32
    np.testing.assert_array_equal(norm.weight, [0, 1, 2])
    state["running_var"][:] = 5  # the layer holds copies
    np.testing.assert_array_equal(norm.running_var, [2, 2, 2])


def test_load_state_dict_reports_every_problem_and_changes_nothing() -> None:
    net = layers.Sequential(layers.Linear(4, 3), layers.ReLU(), layers.Linear(3, 2))
    before = {name: array.copy() for name, array in net.parameters()}
    state = {name: array + 1 for name, array in net.parameters()}
    del state["0.bias"]
    state["1.weight"] = np.zeros((3, 3), np.float32)
    state["2.weight"] = np.zeros((3, 2), np.float32)
    state["2.bias"] = np.zeros(2, np.complex64)
    with pytest.raises(DSLError) as raised:
        net.load_state_dict(state)  # the line the error names
    assert located(raised.value, __file__, _line_of("net.load_state_dict(state)  # the line")) == (
        "net.load_state_dict(state): Sequential.load_state_dict: "
        "missing 0.bias; unexpected 1.weight; "
        "2.weight has shape [3, 2] in the state dict, [2, 3] in the model; "
        "2.bias has dtype complex64 in the state dict, float32 in the model")
    for name, array in net.parameters():
        np.testing.assert_array_equal(array, before[name])


def test_layer_configuration_errors() -> None:
    with pytest.raises(DSLError, match=r"Conv2d: groups=2 must divide in_channels=3 and "
                                       r"out_channels=4$"):
        layers.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(DSLError, match=r"MultiHeadAttention: embed_dim=10 is not divisible by "
                                       r"num_heads=4$"):
        layers.MultiHeadAttention(10, 4)


def test_trace_error_inside_a_layer_points_at_the_users_line() -> None:
    class Misfit(layers.Module):
        def __init__(self) -> None:
            self.fc = layers.Linear(100, 10)

        def forward(self, x: dsl.Tensor) -> dsl.Tensor:
            return self.fc(x)  # the line the error names

    with pytest.raises(DSLError) as raised:
        dsl.trace(Misfit(), x=dsl.f32[8, 784])
    rest = located(raised.value, __file__, _line_of("return self.fc(x)  # the line"))
    assert rest.startswith("self.fc(x): ") and "784" in rest and "100" in rest


def test_module_without_forward_says_so() -> None:
    with pytest.raises(NotImplementedError, match="Empty defines no forward"):
        type("Empty", (layers.Module,), {})()(None)


def _line_of(text: str) -> int:
    """The line of this file holding ``text`` (exactly once)."""
    lines = [n for n, line in enumerate(Path(__file__).read_text().splitlines(), 1)
             if text in line and "_line_of" not in line]
    assert len(lines) == 1, lines
    return lines[0]


# Torch's default initialization, per layer: (DSL layer, torch layer), large enough for the
# sample statistics to be tight.
INITIALIZED = {
    "linear": (lambda: layers.Linear(300, 200), lambda: tnn.Linear(300, 200)),
    "conv2d": (lambda: layers.Conv2d(16, 32, 3, groups=2), lambda: tnn.Conv2d(16, 32, 3,
                                                                              groups=2)),
    "batchnorm2d": (lambda: layers.BatchNorm2d(8), lambda: tnn.BatchNorm2d(8)),
    "layernorm": (lambda: layers.LayerNorm(8), lambda: tnn.LayerNorm(8)),
    "embedding": (lambda: layers.Embedding(500, 16), lambda: tnn.Embedding(500, 16)),
    "multi_head_attention": (lambda: layers.MultiHeadAttention(64, 4),
                             lambda: tnn.MultiheadAttention(64, 4, batch_first=True)),
}


@pytest.mark.parametrize("case", INITIALIZED)
def test_initialization_follows_torch_defaults(case: str) -> None:
    """Constant initial weights equal torch's exactly; random ones have torch's distribution:
    range and standard deviation within sampling error (10%) of torch's own draw."""
    make_ours, make_theirs = INITIALIZED[case]
    torch.manual_seed(0)
    theirs = {name: value.numpy() for name, value in make_theirs().state_dict().items()}
    for name, ours in make_ours().parameters():
        expected = theirs[name]
        assert ours.dtype == np.float32 and ours.shape == expected.shape, name
        if np.all(expected == expected.flat[0]):
            np.testing.assert_array_equal(ours, expected, err_msg=name)
            continue
        assert abs(ours.std() / expected.std() - 1) < 0.1, name
        assert abs(np.abs(ours).max() / np.abs(expected).max() - 1) < 0.1, name
        assert abs(ours.mean()) < 0.1 * expected.std(), name


def test_default_generator_is_seeded_and_composites_share_theirs() -> None:
    np.testing.assert_array_equal(layers.Linear(4, 3).weight, layers.Linear(4, 3).weight)
    np.testing.assert_array_equal(layers.Linear(4, 3).weight, layers.Linear(4, 3, rng=0).weight)
    assert not np.array_equal(layers.Linear(4, 3).weight, layers.Linear(4, 3, rng=1).weight)
    block = layers.TransformerBlock(8, 2, 8)
    assert not np.array_equal(block.mlp[0].weight, block.mlp[2].weight)
    shared = np.random.default_rng(5)
    assert not np.array_equal(layers.Linear(4, 3, rng=shared).weight,
                              layers.Linear(4, 3, rng=shared).weight)


def test_layer_weights_are_replaceable() -> None:
    linear = layers.Linear(3, 2)
    linear.weight = np.eye(2, 3, dtype=np.float32)
    linear.bias = np.array([10, 20], np.float32)
    x = randn(4, 3)
    np.testing.assert_allclose(traced_output(linear, x=x), x[:, :2] + [10, 20], rtol=1e-6)

