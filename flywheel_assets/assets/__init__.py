"""The flywheel's assets, one module per asset, numbered in the order of the wheel."""

from flywheel_assets.assets.step01_reviewer_feedback import reviewer_feedback
from flywheel_assets.assets.step02_exam import exam
from flywheel_assets.assets.step03_student_answers import student_answers
from flywheel_assets.assets.step04_exam_evaluation import exam_evaluation
from flywheel_assets.assets.step05_curriculum import curriculum
from flywheel_assets.assets.step06_lora_adapter import lora_adapter
from flywheel_assets.assets.step07_heldout_evaluation import heldout_evaluation
from flywheel_assets.assets.step08_explanation_preference import explanation_preference
from flywheel_assets.assets.step09_deployed_student import deployed_student

# The per-cycle assets, in the order of the wheel (seed_corpus and lineage_audit sit outside).
CYCLE_ASSETS = [
    reviewer_feedback,
    exam,
    student_answers,
    exam_evaluation,
    curriculum,
    lora_adapter,
    heldout_evaluation,
    explanation_preference,
    deployed_student,
]
