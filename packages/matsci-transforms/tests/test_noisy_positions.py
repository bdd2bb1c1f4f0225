import math
from collections.abc import Callable

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import Compose

from matsci.transforms import NoisyPositions, PeriodicRadiusGraph, edge_vectors


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("scale", [0.05, 0.3])
def test_noise_statistics(scale: float, dtype: torch.dtype) -> None:
    # 100_002 draws: the sample mean has standard error scale / sqrt(n) ~ 0.0032 * scale and the
    # sample std scale / sqrt(2n) ~ 0.0022 * scale, so 5 standard errors bound a seeded draw
    # with room to spare (a failure by chance has probability below 1e-6 for any seed).
    n = 100_002
    data = Data(pos=torch.full((n // 3, 3), 7.0, dtype=dtype))
    out = NoisyPositions(scale, generator=_generator(0))(data)
    noise = out.denoise.double()
    assert abs(float(noise.mean())) < 5 * scale / math.sqrt(n)
    assert abs(float(noise.std()) - scale) < 5 * scale / math.sqrt(2 * n)
    # per direction (n / 3 draws each) and without correlation between directions
    per_direction = n // 3
    assert (noise.mean(0).abs() < 5 * scale / math.sqrt(per_direction)).all()
    assert ((noise.std(0) - scale).abs() < 5 * scale / math.sqrt(2 * per_direction)).all()
    correlation = torch.corrcoef(noise.T)
    off_diagonal = correlation[~torch.eye(3, dtype=torch.bool)]
    assert (off_diagonal.abs() < 5 / math.sqrt(per_direction)).all()
    torch.testing.assert_close(out.noisy_pos, out.pos + out.denoise)
    assert out.noisy_pos.dtype == dtype
    assert out.denoise.dtype == dtype


def test_pos_is_untouched_and_input_not_modified() -> None:
    pos = torch.randn(5, 3)
    original = pos.clone()
    data = Data(pos=pos)
    out = NoisyPositions(0.1)(data)
    assert torch.equal(out.pos, original)
    assert out.pos is pos
    assert "noisy_pos" not in data
    assert "denoise" not in data
    assert not torch.equal(out.noisy_pos, original)


def test_seeded_generator_is_reproducible() -> None:
    data = Data(pos=torch.randn(20, 3))
    first = NoisyPositions(0.2, generator=_generator(7))(data)
    second = NoisyPositions(0.2, generator=_generator(7))(data)
    other = NoisyPositions(0.2, generator=_generator(8))(data)
    assert torch.equal(first.noisy_pos, second.noisy_pos)
    assert torch.equal(first.denoise, second.denoise)
    assert not torch.equal(first.denoise, other.denoise)
    # the generator advances: a second call on the same transform draws new noise
    transform = NoisyPositions(0.2, generator=_generator(7))
    assert not torch.equal(transform(data).denoise, transform(data).denoise)


def test_global_generator_follows_torch_manual_seed() -> None:
    data = Data(pos=torch.randn(20, 3))
    torch.manual_seed(3)
    first = NoisyPositions(0.1)(data)
    torch.manual_seed(3)
    assert torch.equal(first.denoise, NoisyPositions(0.1)(data).denoise)


def test_normalize_divides_by_scale() -> None:
    data = Data(pos=torch.randn(30_000, 3, dtype=torch.float64))
    plain = NoisyPositions(0.25, generator=_generator(1))(data)
    normalized = NoisyPositions(0.25, normalize=True, generator=_generator(1))(data)
    assert torch.equal(plain.noisy_pos, normalized.noisy_pos)
    torch.testing.assert_close(normalized.denoise * 0.25, plain.denoise, rtol=1e-15, atol=0)
    torch.testing.assert_close(normalized.denoise, (normalized.noisy_pos - data.pos) / 0.25)
    assert abs(float(normalized.denoise.std()) - 1.0) < 5 / math.sqrt(2 * 90_000)


def test_works_on_a_batch() -> None:
    structures = [Data(pos=torch.randn(n, 3)) for n in (2, 5, 3)]
    batch = Batch.from_data_list(structures)
    out = NoisyPositions(0.1, generator=_generator(0))(batch)
    assert isinstance(out, Batch)
    assert out.noisy_pos.shape == (10, 3)
    assert out.denoise.shape == (10, 3)
    assert torch.equal(out.pos, batch.pos)
    assert torch.equal(out.batch, batch.batch)
    assert torch.unique(out.denoise).numel() == 30  # every atom and direction its own draw
    # the same transform before collation gives a batch with the same attributes
    collated = Batch.from_data_list([NoisyPositions(0.1)(data) for data in structures])
    assert collated.noisy_pos.shape == collated.denoise.shape == (10, 3)
    torch.testing.assert_close(collated.noisy_pos, collated.pos + collated.denoise)


def test_graph_then_noise_keeps_offsets_valid(make_structure: Callable[..., Data]) -> None:
    # The recommended order: the graph of the clean structure, then noise. Vectors computed
    # from noisy_pos with the same integer offsets are the vectors between the displaced atoms.
    data = make_structure("small_cell", 0, torch.float64)
    transform = Compose([PeriodicRadiusGraph(5.0), NoisyPositions(0.1, generator=_generator(2))])
    out = transform(data)
    i, j = out.edge_index
    shifts = out.cell_offsets @ out.cell[0]  # [E, 3]
    noisy_vectors, noisy_lengths = edge_vectors(
        out.noisy_pos, out.edge_index, out.cell, out.cell_offsets
    )
    assert torch.equal(noisy_vectors, out.noisy_pos[j] - out.noisy_pos[i] + shifts)
    assert torch.equal(noisy_lengths, noisy_vectors.norm(dim=-1))
    clean_vectors, _ = edge_vectors(out.pos, out.edge_index, out.cell, out.cell_offsets)
    # equal up to float64 rounding of the different order of the same sums
    torch.testing.assert_close(
        noisy_vectors, clean_vectors + out.denoise[j] - out.denoise[i], rtol=0, atol=1e-13
    )


def test_small_noise_far_from_cutoff_gives_the_same_graph(
    make_structure: Callable[..., Data],
) -> None:
    # When no clean distance lies near the cutoff and the noise changes lengths by less than that
    # margin, building the graph before or after the noise gives the same edges.
    data = make_structure("cubic", 1, torch.float64)
    wide = PeriodicRadiusGraph(5.0)(data)
    _, lengths = edge_vectors(wide.pos, wide.edge_index, wide.cell, wide.cell_offsets)
    lengths = lengths[lengths > 3.0].unique().sort().values
    gaps = lengths[1:] - lengths[:-1]
    widest = int(gaps.argmax())
    assert float(gaps[widest]) > 0.05
    cutoff = float(lengths[widest] + lengths[widest + 1]) / 2  # > 0.025 Å from clean lengths
    clean = PeriodicRadiusGraph(cutoff)(data)
    noisy = NoisyPositions(0.0005, generator=_generator(0))(clean)
    # lengths change by at most |noise_j - noise_i| <= 2 * sqrt(3) * 0.003 < 0.025
    assert float(noisy.denoise.abs().max()) < 0.003
    regraphed = PeriodicRadiusGraph(cutoff)(Data(pos=noisy.noisy_pos, cell=data.cell, pbc=data.pbc))
    assert torch.equal(regraphed.edge_index, clean.edge_index)
    assert torch.equal(regraphed.cell_offsets, clean.cell_offsets)


def test_repr() -> None:
    assert repr(NoisyPositions(0.2, normalize=True)) == "NoisyPositions(scale=0.2, normalize=True)"


@pytest.mark.parametrize("scale", [0.0, -0.1, math.inf, math.nan])
def test_bad_scale(scale: float) -> None:
    with pytest.raises(ValueError, match=r"NoisyPositions\(scale=.*\): scale must be positive"):
        NoisyPositions(scale)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (Data(pos=torch.zeros(4, 2)), r"pos must have shape \[N, 3\], got \(4, 2\)"),
        (Data(pos=torch.zeros(12)), r"pos must have shape \[N, 3\], got \(12,\)"),
        (Data(x=torch.zeros(4, 3)), r"pos must have shape \[N, 3\], got NoneType"),
        (Data(pos=torch.zeros(4, 3, dtype=torch.long)), r"pos must be floating point"),
    ],
)
def test_bad_positions(data: Data, message: str) -> None:
    with pytest.raises(ValueError, match=rf"NoisyPositions: {message}"):
        NoisyPositions(0.1)(data)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generator_with_positions_on_gpu() -> None:
    data = Data(pos=torch.zeros(4, 3, device="cuda"))
    out = NoisyPositions(0.1, generator=_generator(0))(data)
    assert out.noisy_pos.device == data.pos.device
    cpu = NoisyPositions(0.1, generator=_generator(0))(Data(pos=torch.zeros(4, 3)))
    assert torch.equal(out.denoise.cpu(), cpu.denoise)
