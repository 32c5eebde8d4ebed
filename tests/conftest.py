import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")  # tests never touch the network
torch.set_num_threads(1)  # tiny models: one thread is several times faster on shared cores


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
