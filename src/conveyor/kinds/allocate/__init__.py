"""Student-project allocation (the Project Allocation workload) as the `allocate` kind.

Import this module in a worker (`conveyor worker --import conveyor.kinds.allocate`) to run it.
The exact solvers need the `allocation` extra (`pip install 'conveyor[allocation]'`).
"""

from conveyor.kinds.allocate.kind import allocate
from conveyor.kinds.allocate.models import AllocateInput, AllocateOutput, AllocationConfig

__all__ = ["AllocateInput", "AllocateOutput", "AllocationConfig", "allocate"]
