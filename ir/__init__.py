"""memmap.ir: the program IR (graphs of operators and values) and its importers."""

from .graph import Graph, GraphBuilder, GraphError, Op, Value
from .hlo import HloImportError, import_hlo
from .jax_import import from_jax

__all__ = ["Graph", "GraphBuilder", "GraphError", "HloImportError", "Op", "Value", "from_jax",
           "import_hlo"]
