import io
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from matsci.contract import StreamingMoments
from matsci.tasks.core._normalizer import Normalizer


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    value: torch.dtype = request.param
    return value


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _targets(rows: int, rng: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[rows, 3] targets with different offsets and scales per column."""
    noise = torch.randn(rows, 3, generator=rng, dtype=torch.float64)
    return (noise * torch.tensor([1.0, 0.01, 250.0]) + torch.tensor([0.0, 1e4, -3.0])).to(dtype)


def _split(data: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Consecutive row chunks of the given sizes (the last one takes any rest)."""
    bounds = [0, *itertools.accumulate(sizes)]
    bounds[-1] = max(bounds[-1], data.shape[0])
    return [data[start:stop] for start, stop in itertools.pairwise(bounds)]


def _population_stats(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-shot per-column mean and std (divided by the count) of [M, k] data, in float64."""
    data = data.double()
    return data.mean(dim=0), data.std(dim=0, correction=0)


def test_given_mean_and_std_are_used_exactly(dtype: torch.dtype) -> None:
    normalizer = Normalizer(dim=2, mean=[1.0, -2.0], std=[0.5, 4.0])
    values = torch.tensor([[2.0, 2.0], [1.0, -2.0]], dtype=dtype)
    # ([2, 2] - [1, -2]) / [0.5, 4] = [2, 1]
    expected = torch.tensor([[2.0, 1.0], [0.0, 0.0]], dtype=dtype)
    normalized = normalizer.normalize(values)
    assert normalized.dtype == dtype
    assert torch.equal(normalized, expected)
    assert torch.equal(normalizer.denormalize(expected), values)


def test_defaults_are_identity_and_scalars_broadcast() -> None:
    assert torch.equal(Normalizer(dim=3).mean, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(Normalizer(dim=3).std, torch.ones(3, dtype=torch.float64))
    normalizer = Normalizer(dim=3, mean=2.0, std=torch.tensor(4.0))
    assert normalizer.mean.tolist() == [2.0, 2.0, 2.0]
    assert normalizer.std.tolist() == [4.0, 4.0, 4.0]
    assert normalizer.normalize(torch.tensor([6.0, 2.0, -2.0])).tolist() == [1.0, 0.0, -1.0]


def test_round_trip(dtype: torch.dtype, rng: torch.Generator) -> None:
    normalizer = Normalizer(dim=3, mean=[1.0, -5.0, 300.0], std=[0.1, 2.0, 70.0])
    values = _targets(64, rng, dtype).reshape(4, 16, 3)
    restored = normalizer.denormalize(normalizer.normalize(values))
    assert restored.shape == values.shape
    torch.testing.assert_close(restored, values)


def test_single_column_keeps_the_input_shape() -> None:
    normalizer = Normalizer(mean=1.0, std=2.0)
    flat = torch.tensor([1.0, 3.0, 5.0])
    assert torch.equal(normalizer.normalize(flat), torch.tensor([0.0, 1.0, 2.0]))
    assert normalizer.normalize(flat[:, None]).shape == (3, 1)
    assert normalizer.denormalize(flat).shape == (3,)


def test_gradient_flows_through_normalize() -> None:
    values = torch.tensor([[1.0, 2.0]], requires_grad=True)
    output = Normalizer(dim=2, std=[2.0, 4.0]).normalize(values).sum()
    (grad,) = torch.autograd.grad(output, values)
    assert grad.tolist() == [[0.5, 0.25]]


def test_streaming_fit_matches_single_shot(dtype: torch.dtype, rng: torch.Generator) -> None:
    data = _targets(1000, rng, dtype)
    sizes = [1, 7, 300, 0, 2, 190, 500]
    normalizer = Normalizer(dim=3).fit(_split(data, sizes))
    mean, std = _population_stats(data)
    torch.testing.assert_close(normalizer.mean, mean, rtol=0.0, atol=1e-10)
    torch.testing.assert_close(normalizer.std, std, rtol=0.0, atol=1e-10)
    assert normalizer.count.tolist() == [1000.0] * 3


def test_large_dataset_in_fixed_size_chunks(rng: torch.Generator) -> None:
    data = _targets(100_000, rng)
    normalizer = Normalizer(dim=3).fit(_split(data, [1_000] * 100))
    mean, std = _population_stats(data)
    torch.testing.assert_close(normalizer.mean, mean, rtol=0.0, atol=1e-10)
    torch.testing.assert_close(normalizer.std, std, rtol=0.0, atol=1e-10)
    normalized = normalizer.normalize(data)
    torch.testing.assert_close(normalized.mean(dim=0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(normalized.std(dim=0, correction=0), torch.ones(3).double())


def test_nan_entries_are_ignored_per_column(dtype: torch.dtype, rng: torch.Generator) -> None:
    data = _targets(500, rng, dtype)
    data[torch.rand(500, 3, generator=rng) < torch.tensor([0.0, 0.3, 0.9])] = math.nan
    normalizer = Normalizer(dim=3).fit(_split(data, [37] * 13))
    expected_std = [data[:, c][~data[:, c].isnan()].double().std(correction=0) for c in range(3)]
    torch.testing.assert_close(normalizer.mean, data.double().nanmean(dim=0), rtol=0, atol=1e-10)
    torch.testing.assert_close(normalizer.std, torch.stack(expected_std), rtol=0.0, atol=1e-10)
    assert normalizer.count.tolist() == (~data.isnan()).sum(dim=0).double().tolist()


def test_hand_computed_fit_with_missing_value() -> None:
    # Column 0: [1, 3, 5] -> mean 3, std sqrt(8 / 3); column 1: [2, 6] -> mean 4, std 2.
    normalizer = Normalizer(dim=2)
    normalizer.update(torch.tensor([[1.0, 2.0]]))
    normalizer.update(torch.tensor([[3.0, math.nan], [5.0, 6.0]]))
    normalizer.finalize()
    assert normalizer.mean.tolist() == [3.0, 4.0]
    torch.testing.assert_close(normalizer.std, torch.tensor([math.sqrt(8 / 3), 2.0]).double())


def test_constant_column_gets_unit_std() -> None:
    data = torch.tensor([[0.1, 1.0], [0.1, 2.0], [0.1, 3.0]])
    normalizer = Normalizer(dim=2).fit([data[:1], data[1:]])
    torch.testing.assert_close(normalizer.mean, torch.tensor([0.1, 2.0]).double())
    assert normalizer.std[0].item() == 1.0
    torch.testing.assert_close(normalizer.std[1], torch.tensor(math.sqrt(2 / 3)).double())
    assert normalizer.normalize(data)[:, 0].abs().max().item() < 1e-7


def test_fit_resets_previous_statistics(rng: torch.Generator) -> None:
    normalizer = Normalizer(dim=3).fit([_targets(10, rng) + 100.0])
    data = _targets(50, rng)
    normalizer.fit([data])
    mean, std = _population_stats(data)
    torch.testing.assert_close(normalizer.mean, mean)
    torch.testing.assert_close(normalizer.std, std)


def test_reset_statistics_keeps_mean_and_std() -> None:
    normalizer = Normalizer(dim=1).fit([torch.tensor([1.0, 3.0])])
    normalizer.reset_statistics()
    assert normalizer.count.tolist() == [0.0]
    assert normalizer.running_mean.tolist() == [0.0]
    assert normalizer.m2.tolist() == [0.0]
    assert normalizer.mean.tolist() == [2.0]
    assert normalizer.std.tolist() == [1.0]


def test_state_dict_round_trip(dtype: torch.dtype, rng: torch.Generator) -> None:
    normalizer = Normalizer(dim=3).fit(_split(_targets(200, rng), [64, 64, 64]))
    assert set(normalizer.state_dict()) == {"mean", "std", "count", "running_mean", "m2"}
    buffer = io.BytesIO()
    torch.save(normalizer.state_dict(), buffer)
    buffer.seek(0)
    fresh = Normalizer(dim=3)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    values = _targets(20, rng, dtype)
    assert torch.equal(fresh.normalize(values), normalizer.normalize(values))
    assert torch.equal(fresh.denormalize(values), normalizer.denormalize(values))


def test_cast_statistics_follow_every_change_of_the_buffers(dtype: torch.dtype) -> None:
    normalizer = Normalizer(dim=2, mean=[1.0, -2.0], std=[0.5, 4.0])
    values = torch.tensor([[2.0, 2.0]], dtype=dtype)
    assert normalizer.normalize(values).tolist() == [[2.0, 1.0]]
    assert normalizer.normalize(values).tolist() == [[2.0, 1.0]]  # from the kept cast copies
    normalizer.mean.fill_(0.0)  # in place
    assert normalizer.normalize(values).tolist() == [[4.0, 0.5]]
    normalizer.load_state_dict({**normalizer.state_dict(), "std": torch.ones(2).double()})
    assert normalizer.normalize(values).tolist() == [[2.0, 2.0]]
    assert normalizer.denormalize(values).tolist() == [[2.0, 2.0]]
    normalizer.fit([torch.tensor([[1.0, 10.0], [3.0, 10.0]])])  # finalize copies in place
    assert normalizer.normalize(values).tolist() == [[0.0, -8.0]]
    normalizer.mean = torch.tensor([2.0, 2.0], dtype=torch.float64)  # a new buffer object
    assert normalizer.normalize(values).tolist() == [[0.0, 0.0]]
    normalizer.float()  # .to() replaces the buffers
    assert normalizer.mean.dtype == torch.float32
    assert normalizer.normalize(values).tolist() == [[0.0, 0.0]]


def test_cast_made_in_inference_mode_is_not_reused_for_training() -> None:
    normalizer = Normalizer(dim=1, mean=1.0, std=2.0)
    with torch.inference_mode():
        assert normalizer.denormalize(torch.tensor([1.0])).tolist() == [3.0]
    output = torch.tensor([1.0], requires_grad=True)
    normalizer.denormalize(output).sum().backward()  # type: ignore[no-untyped-call]
    assert output.grad is not None
    assert output.grad.tolist() == [2.0]
    with torch.inference_mode():
        built_in_inference = Normalizer(dim=1, mean=1.0, std=2.0)
        assert built_in_inference.normalize(torch.tensor([5.0])).tolist() == [2.0]


def test_streaming_fit_resumes_from_state_dict(rng: torch.Generator) -> None:
    first, second = _split(_targets(300, rng), [120, 180])
    partial = Normalizer(dim=3)
    partial.update(first)
    resumed = Normalizer(dim=3)
    resumed.load_state_dict(partial.state_dict())
    resumed.update(second)
    resumed.finalize()
    reference = Normalizer(dim=3).fit([first, second])
    torch.testing.assert_close(resumed.mean, reference.mean, rtol=0.0, atol=0.0)
    torch.testing.assert_close(resumed.std, reference.std, rtol=0.0, atol=0.0)


def test_load_statistics_equals_fit_on_the_same_chunks(rng: torch.Generator) -> None:
    data = _targets(400, rng)
    data[torch.rand(400, 3, generator=rng) < 0.2] = math.nan
    data[:, 0] = 0.5  # a constant column: std 1 either way
    chunks = _split(data, [50, 150, 200])
    fitted = Normalizer(dim=3).fit(chunks)
    moments = StreamingMoments(dim=3)
    for chunk in chunks:
        moments.update(chunk)
    loaded = Normalizer(dim=3)
    loaded.load_statistics(moments.mean, moments.std, moments.count)
    assert torch.equal(loaded.mean, fitted.mean)
    assert torch.equal(loaded.std, fitted.std)
    assert loaded.std[0].item() == 1.0
    assert torch.equal(loaded.count, fitted.count)
    assert torch.equal(loaded.running_mean, fitted.running_mean)
    torch.testing.assert_close(loaded.m2, fitted.m2, rtol=1e-12, atol=1e-12)


def test_load_statistics_without_count_zeroes_the_accumulators() -> None:
    normalizer = Normalizer(dim=2).fit([torch.tensor([[1.0, 2.0], [3.0, 8.0]])])
    normalizer.load_statistics(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 4.0]))
    assert normalizer.mean.tolist() == [1.0, -2.0]
    assert normalizer.std.tolist() == [0.5, 4.0]
    assert normalizer.count.tolist() == [0.0, 0.0]
    assert normalizer.m2.tolist() == [0.0, 0.0]
    # ([2, 2] - [1, -2]) / [0.5, 4] = [2, 1]
    assert normalizer.normalize(torch.tensor([[2.0, 2.0]])).tolist() == [[2.0, 1.0]]


def test_load_statistics_extends_with_update() -> None:
    first, second = torch.tensor([[1.0], [3.0]]), torch.tensor([[5.0]])
    normalizer = Normalizer()
    normalizer.load_statistics(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([2.0]))
    normalizer.update(second)
    normalizer.finalize()
    reference = Normalizer().fit([first, second])
    assert normalizer.mean.tolist() == reference.mean.tolist() == [3.0]
    torch.testing.assert_close(normalizer.std, reference.std)


def test_load_statistics_errors() -> None:
    normalizer = Normalizer(dim=2)
    with pytest.raises(ValueError, match=r"load_statistics: std of shape \(3,\); expected \[2\]"):
        normalizer.load_statistics(torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match=r"load_statistics: column\(s\) \[1\] have no values"):
        normalizer.load_statistics(torch.zeros(2), torch.ones(2), torch.tensor([3.0, 0.0]))
    with pytest.raises(ValueError, match=r"std=\[1, -1\]; expected finite values and std >= 0"):
        normalizer.load_statistics(torch.zeros(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"mean=\[nan, 0\]"):
        normalizer.load_statistics(torch.tensor([math.nan, 0.0]), torch.ones(2))
    assert normalizer.mean.tolist() == [0.0, 0.0]  # nothing changed


def test_repr_is_short() -> None:
    assert repr(Normalizer(dim=2, mean=[1.0, 2.5], std=2.0)) == (
        "Normalizer(dim=2, mean=[1, 2.5], std=[2, 2])"
    )
    assert repr(Normalizer(dim=10)) == (
        "Normalizer(dim=10, mean=[0, 0, 0, 0, ... (10 values)], std=[1, 1, 1, 1, ... (10 values)])"
    )


@pytest.mark.parametrize("dim", [0, -1, 2.0, True])
def test_dim_must_be_a_positive_int(dim: int) -> None:
    with pytest.raises(ValueError, match="expected a positive int"):
        Normalizer(dim=dim)


@pytest.mark.parametrize("eps", [0.0, -1.0, math.inf, math.nan])
def test_eps_must_be_finite_and_positive(eps: float) -> None:
    with pytest.raises(ValueError, match=r"Normalizer\(eps=.*\): expected a finite number > 0"):
        Normalizer(eps=eps)


def test_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Normalizer\(std=...\): length 3 != dim 2"):
        Normalizer(dim=2, std=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"Normalizer\(mean=...\): length 1 != dim 2"):
        Normalizer(dim=2, mean=torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"length \(2, 1\) != dim 2"):
        Normalizer(dim=2, mean=torch.tensor([[1.0], [2.0]]))


def test_mean_must_be_numbers() -> None:
    with pytest.raises(ValueError, match="expected a number or a sequence of numbers"):
        Normalizer(dim=1, mean="zero")  # type: ignore[arg-type]


@pytest.mark.parametrize("std", [0.0, -1.0, [1.0, 0.0]])
def test_std_must_be_positive(std: float | list[float]) -> None:
    with pytest.raises(ValueError, match="expected every std > 0"):
        Normalizer(dim=2, std=std)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_mean_and_std_must_be_finite(bad: float) -> None:
    with pytest.raises(ValueError, match=r"Normalizer\(mean=.*\): expected finite values"):
        Normalizer(dim=2, mean=[1.0, bad])
    with pytest.raises(ValueError, match=r"Normalizer\(std=.*\): expected finite values"):
        Normalizer(dim=2, std=[1.0, bad])


@pytest.mark.parametrize("method", ["normalize", "denormalize"])
def test_shape_mismatch_is_refused(method: str) -> None:
    with pytest.raises(ValueError, match=rf"dim=3\)\.{method}: values of shape \(4, 2\)"):
        getattr(Normalizer(dim=3), method)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"values of shape \(4, 3\) do not match \[\.\.\., dim\]"):
        getattr(Normalizer(dim=1), method)(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"values of shape \(\)"):
        getattr(Normalizer(dim=1), method)(torch.tensor(1.0))
    with pytest.raises(TypeError, match="expected a floating-point tensor"):
        getattr(Normalizer(dim=1), method)(torch.tensor([1, 2]))


def test_update_refuses_wrong_shape_and_dtype() -> None:
    with pytest.raises(ValueError, match=r"values of shape \(5,\) do not match \[M, dim\]"):
        Normalizer(dim=2).update(torch.zeros(5))
    with pytest.raises(ValueError, match=r"values of shape \(2, 5, 2\)"):
        Normalizer(dim=2).update(torch.zeros(2, 5, 2))
    with pytest.raises(TypeError, match="expected real values"):
        Normalizer(dim=1).update(torch.zeros(3, dtype=torch.bool))


def test_update_accepts_integer_targets() -> None:
    normalizer = Normalizer().fit([torch.tensor([1, 3]), torch.tensor([[5]])])
    assert normalizer.mean.tolist() == [3.0]


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_update_refuses_infinite_values(bad: float) -> None:
    normalizer = Normalizer(dim=3)
    with pytest.raises(ValueError, match=r"infinite value in column\(s\) \[1\]"):
        normalizer.update(torch.tensor([[0.0, bad, 1.0]]))
    assert normalizer.count.tolist() == [0.0, 0.0, 0.0]


def test_column_never_seen_is_refused() -> None:
    normalizer = Normalizer(dim=3)
    normalizer.update(torch.tensor([[1.0, math.nan, 2.0], [3.0, math.nan, math.nan]]))
    with pytest.raises(ValueError, match=r"finalize: column\(s\) \[1\] have no values"):
        normalizer.finalize()
    with pytest.raises(ValueError, match=r"column\(s\) \[0, 1\] have no values"):
        Normalizer(dim=2).fit([])


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False),
            min_size=2,
            max_size=2,
        ),
        min_size=1,
        max_size=40,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_chunked_fit_matches_single_shot_property(rows: list[list[float]], cuts: list[int]) -> None:
    data = torch.tensor(rows, dtype=torch.float64)
    bounds = [0, *sorted(min(cut, len(rows)) for cut in cuts), len(rows)]
    chunks = [data[start:stop] for start, stop in itertools.pairwise(bounds)]
    normalizer = Normalizer(dim=2).fit(chunks)
    mean, std = _population_stats(data)
    # The accumulators hold the raw statistics (before constant columns get std 1).
    raw_std = (normalizer.m2 / normalizer.count).sqrt()
    torch.testing.assert_close(normalizer.mean, mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(raw_std, std, rtol=1e-9, atol=1e-7)
    assert torch.equal(normalizer.std, torch.where(raw_std < 1e-8, 1.0, raw_std))
    assert normalizer.count.tolist() == [float(len(rows))] * 2


def test_compiled_normalize_matches_eager() -> None:
    normalizer = Normalizer(dim=2, mean=[1.0, -2.0], std=[0.5, 4.0])
    values = torch.tensor([[2.0, 2.0], [1.0, -2.0]])
    compiled = torch.compile(normalizer.normalize, fullgraph=True)
    assert torch.equal(compiled(values), normalizer.normalize(values))
