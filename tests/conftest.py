import os
import sys

# Tests run on a 2-core machine next to other work: one intra-op thread keeps timings sane and results stable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402

torch.set_num_threads(1)
