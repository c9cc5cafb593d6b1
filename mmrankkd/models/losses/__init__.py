from .balance_divergence import BalanceDivergenceLoss
from .correlation_matching import CorrelationMatchingLoss
from .cwd import CWDLoss
from .deit import DeiTDistillationLoss
from .dist import DISTLoss
from .dkd import DKDLoss
from .kd import KDLoss
from .kendall_rank import KendallRankLoss
from .mlkd import MLKDLoss
from .plackett_luce import PlackettLuceLoss

__all__ = [
    'BalanceDivergenceLoss', 'KendallRankLoss', 'CorrelationMatchingLoss',
    'PlackettLuceLoss', 'KDLoss', 'DISTLoss', 'CWDLoss', 'DKDLoss',
    'MLKDLoss', 'DeiTDistillationLoss'
]
