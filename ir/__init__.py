"""memmap.ir: the program IR (graphs of operators and values) and its importers."""

from .graph import Graph, GraphBuilder, GraphError, Op, Value
from .hlo import HloImportError, import_hlo
from .jax_import import from_jax
from .torch_import import TorchImportError, from_torch, import_pt2

__all__ = ["Graph", "GraphBuilder", "GraphError", "HloImportError", "Op", "TorchImportError", "Value",
           "from_jax", "from_torch", "import_hlo", "import_pt2"]
