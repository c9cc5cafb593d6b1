from .kd import KDLoss

__all__ = ['KDLoss']
