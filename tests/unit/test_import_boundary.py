"""camu/ is pure PyTorch: it must import and run with ray and mlflow unavailable."""

import subprocess
import sys

CODE = """
import sys
sys.modules['ray'] = None      # any 'import ray' now raises ImportError
sys.modules['mlflow'] = None
import camu, camu.methods, camu.evaluation, camu.scenarios, camu.training, camu.models, camu.data
from camu import load_dataset, make_split
d = load_dataset('synthetic', {'num_train': 20, 'num_test': 10})
make_split('random', {'fraction': 0.5}, d.train.labels, d.class_names, 0)
print('ok')
"""


def test_camu_imports_without_ray_or_mlflow():
    out = subprocess.run([sys.executable, "-c", CODE], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_no_camu_module_mentions_ray_or_mlflow():
    from pathlib import Path

    import camu

    root = Path(camu.__file__).parent
    offenders = [p for p in root.rglob("*.py")
                 if any(line.strip().startswith(("import ray", "from ray", "import mlflow", "from mlflow"))
                        for line in p.read_text().splitlines())]
    assert offenders == []
