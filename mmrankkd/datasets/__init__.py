"""Small synthetic data sets in real layouts, for the quick-start and tests."""
from .synthetic_cityscapes import (draw_synthetic_cityscapes_scene,
                                   make_synthetic_cityscapes)

__all__ = ['make_synthetic_cityscapes', 'draw_synthetic_cityscapes_scene']
