"""Denoising pretraining helps force training on little labelled data (a slow, loose check).

The arms of ``benchmarks/denoise_pretraining.py`` for SchNet with one seed: pretrain on 256
unlabelled EMT cells (noise 0.3 Å), fine-tune on 24 labelled ones, against training from
scratch for the same 300 steps, both at a constant learning rate (the recipe this check was
written for). Measured on a 2-core CPU: 56 against 81 meV/Å. With the force task's default
per-step cosine both arms end near 69 meV/Å (benchmarks page): pretraining then gains nothing
at this size, so this checks that pretrained weights carry what they learned into
fine-tuning, not that pretraining beats every recipe.
"""

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _benchmark():
    sys.path.insert(0, str(BENCHMARKS))  # for its `_common` import
    try:
        spec = importlib.util.spec_from_file_location(
            "denoise_pretraining", BENCHMARKS / "denoise_pretraining.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow
def test_pretrained_encoder_fine_tunes_to_lower_force_error_than_scratch() -> None:
    bench = _benchmark()
    args = argparse.Namespace(
        noise=0.3, lr=3e-3, finetune_lr=3e-3, pretrain_steps=600, steps=300, batch=8,
        direct=False, schedule="constant",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        pool = bench.emt_structures(Path(folder), "pool", 256, seed=10)
        labelled = bench.emt_structures(Path(folder), "labelled", 24, seed=11)
        test = bench.emt_structures(Path(folder), "test", 48, seed=12)
    result = bench.run_seed("schnet", 0, pool, labelled, test, args)
    assert result["explained noise"] > 0.5, result
    # Loose: a tenth better than scratch (measured: 30% better).
    assert result["denoise+finetune"] < 0.9 * result["scratch"], result
