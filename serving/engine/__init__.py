"""Text-generation engines behind the server: vLLM in production, transformers+PEFT as the reference.

`create_engine(settings, model_path)` returns an `Engine` (see `base.py`); nothing here
imports vLLM until a vLLM engine is asked for.
"""

from serving.engine.factory import EngineUnavailableError, create_engine
from serving.engine.settings import EngineSettings

__all__ = ["EngineSettings", "EngineUnavailableError", "create_engine"]
