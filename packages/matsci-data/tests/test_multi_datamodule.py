from pathlib import Path

import ase.db
import pytest
import torch
from ase.build import bulk
from lightning.pytorch import LightningDataModule

from matsci.data import AtomsDataModule, MultiDataModule, compute_statistics


def _module(folder: Path, name: str, count: int, offset: float) -> AtomsDataModule:
    path = folder / f"{name}.db"
    with ase.db.connect(path) as db:
        for i in range(count):
            db.write(bulk("Cu", a=3.6 + 0.01 * i), target=offset + float(i), other=-float(i))
    return AtomsDataModule(path, keys=["target", "other"], split=[1.0, 0.0, 0.0], batch_size=3)


def test_statistics_per_dataset(tmp_path: Path) -> None:
    small, large = _module(tmp_path, "small", 4, 0.0), _module(tmp_path, "large", 9, 100.0)
    data = MultiDataModule({"small": small, "large": large})
    data.setup("fit")
    stats = data.statistics(keys={"small": ["target"]})
    assert sorted(stats) == ["large", "small"]
    # small: targets 0..3 -> mean 1.5, population std sqrt(1.25); large: 100..108 -> mean 104.
    assert stats["small"].mean["target"].tolist() == [1.5]
    torch.testing.assert_close(stats["small"].std["target"], torch.tensor([1.25**0.5]).double())
    assert set(stats["small"].mean) == {"target"}
    assert set(stats["large"].mean) == {"target", "other"}
    assert stats["large"].mean["target"].tolist() == [104.0]
    assert large.dataset is not None
    expected = compute_statistics(large.dataset, keys=["target", "other"])
    torch.testing.assert_close(stats["large"].std["other"], expected.std["other"])


def test_statistics_errors(tmp_path: Path) -> None:
    data = MultiDataModule({"small": _module(tmp_path, "small", 4, 0.0)})
    data.setup("fit")
    with pytest.raises(
        ValueError, match=r"unknown datasets \['big'\]; the datasets are \['small'\]"
    ):
        data.statistics(keys={"big": ["target"]})
    plain = MultiDataModule({"plain": LightningDataModule()})
    with pytest.raises(TypeError, match="dataset 'plain' is a LightningDataModule, which has no"):
        plain.statistics()
