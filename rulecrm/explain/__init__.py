"""`rulecrm explain`: why an action did or did not happen for a customer."""
from rulecrm.explain.render import render_json, render_text
from rulecrm.explain.report import explain
from rulecrm.explain.state import CustomerState, ExplainError, StateReader
from rulecrm.explain.trace import Evaluation, Trace, evaluate, expression_text, trace

__all__ = [
    "CustomerState", "Evaluation", "ExplainError", "StateReader", "Trace", "evaluate", "explain",
    "expression_text", "render_json", "render_text", "trace",
]
