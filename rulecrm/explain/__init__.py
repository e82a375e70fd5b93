"""`rulecrm explain`: why an action did or did not happen for a customer."""
from .report import explain
from .render import render_json, render_text
from .state import CustomerState, ExplainError, StateReader
from .trace import Evaluation, Trace, evaluate, expression_text, trace

__all__ = [
    "CustomerState", "Evaluation", "ExplainError", "StateReader", "Trace", "evaluate", "explain",
    "expression_text", "render_json", "render_text", "trace",
]
