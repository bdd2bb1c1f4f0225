import itertools
import math

import pytest
import torch

from matsci.contract import StreamingMoments, StreamingRMS


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    value: torch.dtype = request.param
    return value


def _split(data: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Consecutive row chunks of the given sizes (the last one takes any rest)."""
    bounds = [0, *itertools.accumulate(sizes)]
    bounds[-1] = max(bounds[-1], data.shape[0])
    return [data[start:stop] for start, stop in itertools.pairwise(bounds)]


def test_moments_hand_computed_with_a_missing_value() -> None:
    # Column 0: [1, 3, 5] -> mean 3, var 8/3; column 1: [2, 6] -> mean 4, var 4.
    moments = StreamingMoments(dim=2)
    moments.update(torch.tensor([[1.0, 2.0]]))
    moments.update(torch.tensor([[3.0, math.nan], [5.0, 6.0]]))
    assert moments.count.tolist() == [3.0, 2.0]
    assert moments.mean.tolist() == [3.0, 4.0]
    assert moments.m2.tolist() == [8.0, 8.0]
    torch.testing.assert_close(moments.variance, torch.tensor([8 / 3, 4.0]).double())
    torch.testing.assert_close(moments.std, torch.tensor([math.sqrt(8 / 3), 2.0]).double())


def test_moments_are_float64_and_match_single_shot(dtype: torch.dtype) -> None:
    rng = torch.Generator().manual_seed(0)
    noise = torch.randn(1000, 3, generator=rng, dtype=torch.float64)
    data = (noise * torch.tensor([1.0, 0.01, 250.0]) + torch.tensor([0.0, 1e4, -3.0])).to(dtype)
    moments = StreamingMoments(dim=3)
    for chunk in _split(data, [1, 7, 300, 0, 2, 190, 500]):
        moments.update(chunk)
    assert moments.mean.dtype == moments.m2.dtype == moments.count.dtype == torch.float64
    torch.testing.assert_close(moments.mean, data.double().mean(0), rtol=0.0, atol=1e-10)
    torch.testing.assert_close(moments.std, data.double().std(0, correction=0), rtol=0, atol=1e-10)
    assert moments.count.tolist() == [1000.0] * 3


def test_merge_equals_one_stream() -> None:
    data = torch.arange(20.0).reshape(10, 2) ** 1.5
    whole, first, second = StreamingMoments(2), StreamingMoments(2), StreamingMoments(2)
    whole.update(data)
    first.update(data[:3])
    second.update(data[3:])
    first.merge(second)
    torch.testing.assert_close(first.mean, whole.mean, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(first.m2, whole.m2, rtol=1e-12, atol=0.0)
    assert first.count.tolist() == [10.0, 10.0]


def test_from_state_continues_a_stream_exactly() -> None:
    data = torch.linspace(-3.0, 7.0, 30).reshape(15, 2)
    reference = StreamingMoments(2)
    reference.update(data[:6])
    reference.update(data[6:])
    partial = StreamingMoments(2)
    partial.update(data[:6])
    resumed = StreamingMoments.from_state(partial.count, partial.mean, partial.m2)
    resumed.update(data[6:])
    assert torch.equal(resumed.mean, reference.mean)
    assert torch.equal(resumed.m2, reference.m2)
    assert partial.count.tolist() == [6.0, 6.0]  # not changed in place


def test_empty_column_has_zero_mean_and_nan_std() -> None:
    moments = StreamingMoments(dim=2)
    moments.update(torch.tensor([[1.0, math.nan]]))
    assert moments.mean.tolist() == [1.0, 0.0]
    assert moments.std[0].item() == 0.0
    assert math.isnan(moments.std[1].item())


def test_single_column_takes_flat_values_and_integers() -> None:
    moments = StreamingMoments(dim=1)
    moments.update(torch.tensor([1, 3]))
    moments.update(torch.tensor([[5]]))
    assert moments.mean.tolist() == [3.0]


def test_moments_errors() -> None:
    with pytest.raises(ValueError, match=r"StreamingMoments\(dim=0\): expected a positive int"):
        StreamingMoments(dim=0)
    with pytest.raises(ValueError, match=r"values of shape \(5,\) do not match \[M, dim\]"):
        StreamingMoments(dim=2).update(torch.zeros(5))
    with pytest.raises(ValueError, match=r"^where: values of shape \(2, 5, 2\)"):
        StreamingMoments(dim=2).update(torch.zeros(2, 5, 2), context="where")
    with pytest.raises(TypeError, match=r"expected real values, got dtype torch\.bool"):
        StreamingMoments(dim=1).update(torch.zeros(3, dtype=torch.bool))
    moments = StreamingMoments(dim=3)
    with pytest.raises(ValueError, match=r"infinite value in column\(s\) \[1\]"):
        moments.update(torch.tensor([[0.0, math.inf, 1.0]]))
    assert moments.count.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"merge: dim 2 != 3"):
        moments.merge(StreamingMoments(dim=2))
    with pytest.raises(ValueError, match=r"shapes \(2,\), \(3,\) and \(2,\)"):
        StreamingMoments.from_state(torch.zeros(2), torch.zeros(3), torch.zeros(2))


def test_rms_skips_nan_and_matches_direct() -> None:
    rms = StreamingRMS()
    assert math.isnan(rms.rms)
    rms.update(torch.tensor([[3.0, math.nan, 0.0]]))
    rms.update(torch.tensor([[4.0, 0.0, 0.0]], dtype=torch.float64))
    assert rms.count == 5
    assert rms.sum_squares == 25.0
    assert rms.rms == math.sqrt(5.0)


def test_rms_of_many_chunks() -> None:
    values = torch.randn(301, 3, generator=torch.Generator().manual_seed(1))
    rms = StreamingRMS()
    for chunk in _split(values, [10, 100, 0, 50]):
        rms.update(chunk)
    assert rms.rms == pytest.approx(values.double().square().mean().sqrt().item(), rel=1e-12)
