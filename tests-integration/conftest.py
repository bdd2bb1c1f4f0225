import sys
from pathlib import Path

# Reuse the physics package's small smooth test encoder rather than writing a second one.
sys.path.insert(0, str(Path(__file__).parents[1] / "packages" / "matsci-tasks-physics" / "tests"))
# Helpers of this folder (torchrun_helpers); a script that torchrun starts finds them anyway.
sys.path.insert(0, str(Path(__file__).parent))
