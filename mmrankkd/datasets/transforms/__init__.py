"""Data transforms of mmrankkd: augmentations that record which view they
made, so a teacher-logit store can look the teacher's logits up, and MLKD's
strong view."""
from .randaugment import MLKDRandAugment
from .views import (VIEW_KEY, ViewRandomCrop, ViewRandomFlip,
                    apply_pipeline_view, pipeline_view_counts, view_id)

__all__ = [
    'MLKDRandAugment', 'VIEW_KEY', 'ViewRandomCrop', 'ViewRandomFlip',
    'apply_pipeline_view',
    'pipeline_view_counts', 'view_id'
]
