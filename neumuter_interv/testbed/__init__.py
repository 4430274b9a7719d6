"""The embedded testbed world: a tiny GPT-Neo that memorized fictitious people's private data, its retrain
oracle and a masked LM for neighbours, all trained here from offline text and cached on disk.

    from neumuter_interv.testbed import TestbedConfig, build_testbed
    world = build_testbed(TestbedConfig.tiny())
    model, tokenizer = world.load_model(), world.load_tokenizer()
"""

from .config import TestbedConfig
from .world import Testbed, build_testbed, default_cache_dir

__all__ = ["Testbed", "TestbedConfig", "build_testbed", "default_cache_dir"]
