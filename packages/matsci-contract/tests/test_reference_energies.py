import math

import numpy as np
import pytest
import torch

from matsci.contract import NUM_ELEMENTS, ReferenceEnergyFit

REFERENCE = {1: -1.25, 8: -4.5, 29: -3.75, 79: -3.0625}


def _compositions(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Atomic numbers [N], structure index [N] and exact energies [B] of random structures."""
    rng = np.random.default_rng(seed)
    numbers, index, energies = [], [], []
    for b in range(count):
        chosen = rng.choice(list(REFERENCE), size=int(rng.integers(2, 9)))
        numbers.extend(chosen.tolist())
        index.extend([b] * len(chosen))
        energies.append(sum(REFERENCE[int(z)] for z in chosen))
    return torch.tensor(numbers), torch.tensor(index), torch.tensor(energies, dtype=torch.float64)


def test_reference_fit_hand_computed() -> None:
    # H2O-like: 2 H + 1 O = -14, 1 H + 2 O = -19  ->  H = -3, O = -8.
    fit = ReferenceEnergyFit()
    fit.update(torch.tensor([1, 1, 8, 1, 8, 8]), torch.tensor([0, 0, 0, 1, 1, 1]),
               torch.tensor([-14.0, -19.0]))  # fmt: skip
    references = fit.solve()
    assert references.shape == (NUM_ELEMENTS,)
    assert references.dtype == torch.float64
    torch.testing.assert_close(references[[1, 8]], torch.tensor([-3.0, -8.0]).double())
    assert references[[z for z in range(NUM_ELEMENTS) if z not in (1, 8)]].abs().max() == 0
    assert fit.num_structures == 2
    assert fit.gram[1, 1].item() == 5.0  # 2² + 1²
    assert fit.gram[1, 8].item() == 4.0  # 2·1 + 1·2
    assert fit.moment[8].item() == -14.0 - 2 * 19.0


@pytest.mark.parametrize("batch_size", [1, 7, 40])
def test_streamed_fit_recovers_known_references(batch_size: int) -> None:
    numbers, index, energies = _compositions(40)
    fit = ReferenceEnergyFit()
    for start in range(0, 40, batch_size):
        mask = (index >= start) & (index < start + batch_size)
        fit.update(numbers[mask], index[mask] - start, energies[start : start + batch_size])
    references = fit.solve()
    for z, energy in REFERENCE.items():
        assert abs(references[z].item() - energy) < 1e-8
    assert fit.residual_rms() < 1e-6


def test_nan_energies_are_skipped() -> None:
    numbers, index, energies = _compositions(20, seed=3)
    clean = ReferenceEnergyFit()
    clean.update(numbers, index, energies)
    energies_with_gap = torch.cat([energies, torch.tensor([math.nan])])
    gapped = ReferenceEnergyFit()
    gapped.update(torch.cat([numbers, torch.tensor([79, 79])]),
                  torch.cat([index, torch.tensor([20, 20])]), energies_with_gap)  # fmt: skip
    assert gapped.num_structures == 20
    assert torch.equal(gapped.solve(), clean.solve())


def test_residual_rms_per_atom_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    numbers, index, energies = _compositions(30, seed=1)
    energies = energies + torch.from_numpy(0.3 * rng.normal(size=30))
    fit = ReferenceEnergyFit()
    fit.update(numbers, index, energies)
    references = fit.solve()
    natoms = torch.bincount(index).double()
    per_structure = torch.zeros(30, dtype=torch.float64).index_add(0, index, references[numbers])
    residual = (energies - per_structure) / natoms
    assert fit.residual_rms() == pytest.approx(residual.square().mean().sqrt().item(), rel=1e-6)
    counts = torch.zeros(30, NUM_ELEMENTS, dtype=torch.float64)
    counts.index_put_((index, numbers), torch.ones(len(index), dtype=torch.float64), True)
    direct = np.linalg.lstsq(counts[:, list(REFERENCE)].numpy(), energies.numpy(), rcond=None)[0]
    np.testing.assert_allclose(references[list(REFERENCE)].numpy(), direct)


def test_compositions_and_atoms_give_the_same_fit() -> None:
    numbers, index, energies = _compositions(12, seed=5)
    counts = torch.zeros(12, 80)
    counts.index_put_((index, numbers), torch.ones(len(index)), accumulate=True)
    by_atoms, by_counts = ReferenceEnergyFit(), ReferenceEnergyFit()
    by_atoms.update(numbers, index, energies)
    by_counts.update_compositions(counts, energies)
    assert torch.equal(by_atoms.gram, by_counts.gram)
    assert torch.equal(by_atoms.solve(), by_counts.solve())


def test_degenerate_fit_gives_the_minimum_norm_solution() -> None:
    counts = torch.zeros(3, 30)
    counts[:, 29], counts[:, 13] = torch.tensor([2.0, 4.0, 6.0]), torch.tensor([1.0, 2.0, 3.0])
    energies = counts[:, 29] * -3.5 + counts[:, 13] * -3.0  # only Cu2Al: one direction known
    fit = ReferenceEnergyFit()
    fit.update_compositions(counts, energies)
    references = fit.solve()
    torch.testing.assert_close(counts.double() @ references[:30], energies.double())
    # Minimum norm: the solution lies along the one known direction (2, 1) of (Cu, Al).
    torch.testing.assert_close(references[29] / references[13], torch.tensor(2.0).double())


def test_reference_fit_errors() -> None:
    with pytest.raises(ValueError, match=r"solve: no structure with an energy was added"):
        ReferenceEnergyFit().solve()
    with pytest.raises(ValueError, match="residual_rms: no structure with an energy"):
        ReferenceEnergyFit().residual_rms()
    fit = ReferenceEnergyFit()
    with pytest.raises(ValueError, match=r"compositions of shape \(3,\); expected \[B, M\]"):
        fit.update_compositions(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"energies of shape \(2,\); expected \[3\]"):
        fit.update_compositions(torch.zeros(3, 10), torch.zeros(2))
    with pytest.raises(ValueError, match=r"atomic_numbers \[2\] and batch \[3\]"):
        fit.update(torch.tensor([1, 1]), torch.tensor([0, 0, 0]), torch.zeros(1))
    with pytest.raises(ValueError, match=r"atomic numbers from 1 to 119; expected 1\.\.118"):
        fit.update(torch.tensor([1, 119]), torch.tensor([0, 0]), torch.zeros(1))
    with pytest.raises(ValueError, match="batch indices from 0 to 1 for 1 energies"):
        fit.update(torch.tensor([1, 1]), torch.tensor([0, 1]), torch.zeros(1))
    fit.update(torch.tensor([1]), torch.tensor([0]), torch.tensor([-1.0]))
    with pytest.raises(ValueError, match=r"references of shape \(3,\); expected \[119\]"):
        fit.residual_rms(torch.zeros(3))
