"""The operators: one module per operator, each with its typed spec (``spec.OperatorSpec``) and its
request builder, and ``registry`` (an ordered mapping name -> spec) that the plan, the proposer,
the driver, the bandit, the index and the reports read. Pure: the engine makes the (async) LLM
calls between a request and ``child_from_reply``.

- ``mutation``: a segment rewritten by a (task kind, persona) prompt; ``crossover``: two parents'
  versions merged; ``eot``: Evolution of Thought's two turns; ``fix``: a failed child repaired;
  ``repropose``: a request asked again after a near-duplicate reply (novelty);
- ``offline`` (with ``offline_edits``, ``offline_swaps``, ``offline_source``): the no-LLM
  baseline's mutation and crossover;
- ``common``: what the request builders share; ``reply``: from a reply to a ``Child``.

This package's names below are the operators' public interface.
"""

from guided_evolution.evolution.operators.common import (
    DIFF_MIN_CHARS,
    FEEDBACK_INTRO,
    feedback_value,
    fence,
    file_context,
    reflection_text,
)
from guided_evolution.evolution.operators.crossover import crossover_request
from guided_evolution.evolution.operators.eot import eot_apply_request, eot_reason_request
from guided_evolution.evolution.operators.fix import fix_request
from guided_evolution.evolution.operators.mutation import (
    MUTATION_KINDS,
    PERSONAS,
    mutation_prompt_name,
    mutation_request,
)
from guided_evolution.evolution.operators.reply import child_from_reply
from guided_evolution.evolution.operators.repropose import novelty_request
from guided_evolution.evolution.operators.spec import (
    Child,
    OperatorRequest,
    OperatorSpec,
    Rejected,
    StepContext,
)

__all__ = [
    "DIFF_MIN_CHARS",
    "FEEDBACK_INTRO",
    "MUTATION_KINDS",
    "PERSONAS",
    "Child",
    "OperatorRequest",
    "OperatorSpec",
    "Rejected",
    "StepContext",
    "child_from_reply",
    "crossover_request",
    "eot_apply_request",
    "eot_reason_request",
    "feedback_value",
    "fence",
    "file_context",
    "fix_request",
    "mutation_prompt_name",
    "mutation_request",
    "novelty_request",
    "reflection_text",
]
