"""A fixture for tests of tiny torch models: one thread (fastest for them, above all on a
shared CPU), restored afterwards. Import it into a test module to use it."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
