"""Causal tracing (Meng et al. 2022; Sharma et al. 2024 for Mamba), attention/state knockout and the information
flow plot (Geva et al. 2023), batched on the patching engine.

>>> from interp import tracing
>>> result = tracing.causal_trace(model, "The Eiffel Tower is located in the city of", "Eiffel Tower")
>>> result.save_html("trace.html")
"""

from interp.tracing.flow import EDGES, FlowResult, information_flow
from interp.tracing.knockout import edge_mask, knockout, knockout_hooks
from interp.tracing.result import TraceResult
from interp.tracing.subject import subject_span
from interp.tracing.summary import AverageTrace, average_trace, token_categories
from interp.tracing.trace import causal_trace

__all__ = ["causal_trace", "TraceResult", "knockout", "knockout_hooks", "edge_mask", "information_flow",
           "FlowResult", "EDGES", "subject_span", "average_trace", "AverageTrace", "token_categories"]
