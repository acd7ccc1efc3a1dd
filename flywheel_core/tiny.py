"""Settings overrides for a flywheel small enough for seconds per cycle: the config-built tiny
Llama, few questions, few steps. The tests and the benchmarks use this one list."""

TINY_OVERRIDES = [
    "student.base_model=tiny-llama",
    "student.num_threads=1",
    "student.max_prompt_tokens=192",
    "exam.num_questions=16",
    "curriculum.new_examples_per_cycle=24",
    "training.steps_per_cycle=6",
    "training.max_steps_per_cycle=6",
    "training.batch_size=4",
    "training.layers_to_train=null",
    "heldout.max_items=24",
    "judge.sample_size=8",
    "judge.max_new_tokens=12",
    "training.max_explanation_tokens=32",
    # A random tiny model's held-out accuracy is noise: the gate has its own tests.
    "gate.max_accuracy_drop=1.0",
    "gate.block_recall_collapse=false",
    "gate.max_answer_excess=1.0",
]
