"""Model tests run single-threaded (see ``tests.conftest.single_torch_thread``)."""

from __future__ import annotations

import pytest

from tests.conftest import single_torch_thread

_single_thread = pytest.fixture(autouse=True)(single_torch_thread)
