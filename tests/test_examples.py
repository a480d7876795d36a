"""The examples run as a user runs them, and do what they say."""

import math
import re
import subprocess
import sys
from pathlib import Path


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_own_loop_trains_saves_and_loads():
    run = subprocess.run([sys.executable, str(EXAMPLES / "own_loop.py")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    initial = float(re.search(r"^initial test relative L2 (\S+)$", out, re.M).group(1))
    final = float(re.search(r"^final test relative L2 (\S+)$", out, re.M).group(1))
    assert math.isfinite(final) and final < 0.5 * initial
    assert re.search(r"^epoch 1 mixed/float16: ", out, re.M) and re.search(r"^epoch 8 full: ", out, re.M)
    assert "full model inside autocast(bfloat16) runs as amp/bfloat16" in out
    assert "mixed model inside autocast(bfloat16) runs as mixed/float16" in out
    assert "loaded mixed/float16 model from mpno.run.experiment.train" in out
