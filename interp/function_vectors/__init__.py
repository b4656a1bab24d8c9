"""Function vectors (Todd et al. 2024, "Function Vectors in Large Language Models", ICLR): a few attention heads
carry a compact representation of an in-context task; the sum of their mean outputs, added to the residual stream
of a zero-shot prompt, makes the model perform the task.

- :mod:`~interp.function_vectors.tasks`: tasks built offline from the tokenizer, ICL / shuffled / zero-shot prompts;
- :mod:`~interp.function_vectors.heads`: mean head outputs and each head's causal indirect effect (batched);
- :mod:`~interp.function_vectors.vector`: the vector, zero-shot accuracy, the layer sweep;
- :func:`function_vectors`: the whole experiment, a :class:`FunctionVectorResult`.
"""

from interp.function_vectors.heads import causal_indirect_effects, mean_head_outputs, require_heads
from interp.function_vectors.result import FunctionVectorResult
from interp.function_vectors.run import FVConfig, function_vectors
from interp.function_vectors.tasks import (
                                           TASKS,
                                           Prompts,
                                           Task,
                                           Template,
                                           icl_prompts,
                                           load_pairs,
                                           make_task,
                                           zero_shot_prompts,
)
from interp.function_vectors.vector import (
                                           accuracy,
                                           add_at_last_token,
                                           function_vector,
                                           layer_sweep,
                                           random_heads,
                                           top_heads,
)

__all__ = ["TASKS", "Template", "Task", "Prompts", "load_pairs", "make_task", "icl_prompts", "zero_shot_prompts",
           "require_heads", "mean_head_outputs", "causal_indirect_effects", "top_heads", "random_heads",
           "function_vector", "accuracy", "add_at_last_token", "layer_sweep", "FVConfig", "function_vectors",
           "FunctionVectorResult"]
