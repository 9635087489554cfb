"""The detector backends the configuration accepts are the ones the registry can build."""
from typing import get_args

from processors.inference.backends.registry import BACKENDS
from schemas.settings.config import ModelConfig


def test_every_configurable_backend_has_a_builder_and_no_builder_is_unreachable():
    assert set(get_args(ModelConfig.model_fields["backend"].annotation)) == set(BACKENDS)
