import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")  # tests never touch the network
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
