"""Build output heads on a batch of embeddings and print what they produce.

This is the main job of the workspace until the training command exists:
`uv run python examples/heads_demo.py`.
"""

import torch
from e3nn import o3

from matsci.heads import OutputHead

torch.manual_seed(0)
structures, atoms = 4, 37

# An invariant encoder gives one 48-wide vector per structure and per atom.
system_embedding = torch.randn(structures, 48)
point_embedding = torch.randn(atoms, 48)
energy_head = OutputHead(1, hidden_dim=64, num_hidden=2, input_dim=48, activation="torch.nn.SiLU")
force_head = OutputHead(3, hidden_dim=64, num_hidden=2, input_dim=48, activation="torch.nn.SiLU")
energy = energy_head(system_embedding)
print(f"energy head     {tuple(system_embedding.shape)} -> {tuple(energy.shape)}")
print(
    f"direct forces   {tuple(point_embedding.shape)} -> {tuple(force_head(point_embedding).shape)}"
)

# An equivariant encoder gives irreps; an irreps head keeps vectors equivariant.
irreps = o3.Irreps("32x0e+8x1o")
features = irreps.randn(atoms, -1)
vector_head = OutputHead(
    "1x1o",
    hidden_dim="16x0e+8x1o",
    input_dim=irreps,
    activation="torch.nn.SiLU",
    block_type="IrrepOutputBlock",
).eval()
rotation = o3.rand_matrix()
rotated_out = vector_head(features @ irreps.D_from_matrix(rotation).T)
out_rotated = vector_head(features) @ o3.Irreps("1x1o").D_from_matrix(rotation).T
error = (rotated_out - out_rotated).abs().max().item()
print(f"irreps vectors  {tuple(features.shape)} -> {tuple(vector_head(features).shape)}")
print(f"equivariance error after a random rotation: {error:.1e}")
