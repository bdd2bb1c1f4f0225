"""Check that matsci.heads works without e3nn and that irreps blocks name the missing extra.

Run by `nox -s install_alone` in an environment where only `matsci-heads` (no extras) is installed.
"""

import importlib.util
import sys

import torch

from matsci.heads import IrrepOutputBlock, OutputHead

if importlib.util.find_spec("e3nn") is not None:
    sys.exit("this check needs an environment without e3nn")

head = OutputHead(output_dim=2, hidden_dim=8, input_dim=5)
assert head(torch.randn(3, 5)).shape == (3, 2)
try:
    IrrepOutputBlock("1x1o", "4x0e+2x1o")
except ImportError as error:
    if "matsci-heads[e3nn]" not in str(error):
        sys.exit(f"the ImportError does not name the extra: {error}")
    print("matsci.heads without e3nn: dense heads work; IrrepOutputBlock asks for the extra")
else:
    sys.exit("IrrepOutputBlock was built without e3nn")
