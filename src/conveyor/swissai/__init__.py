"""Swiss AI Center service contract: expose any kind as a service of a core engine.

`swissai.service("kind", ...)` declares it (see `declare`); `api/compat/swissai.py` serves the
contract; `compute` is the kind that runs a task; `registration` announces services.
"""

from __future__ import annotations

from conveyor.swissai.declare import SwissAIService, service
from conveyor.swissai.outputs import output_type

__all__ = ["SwissAIService", "output_type", "service"]
