from .balance_divergence import BalanceDivergenceLoss
from .correlation_matching import CorrelationMatchingLoss
from .ctkd import CTKDLoss
from .cwd import CWDLoss
from .deit import DeiTDistillationLoss
from .dist import DISTLoss
from .dkd import DKDLoss
from .kd import KDLoss
from .kendall_rank import KendallRankLoss
from .mlkd import MLKDLoss
from .plackett_luce import PlackettLuceLoss
from .ttm import TTMLoss, WTTMLoss

__all__ = [
    'BalanceDivergenceLoss', 'KendallRankLoss', 'CorrelationMatchingLoss',
    'PlackettLuceLoss', 'KDLoss', 'DISTLoss', 'CWDLoss', 'DKDLoss',
    'MLKDLoss', 'DeiTDistillationLoss', 'CTKDLoss', 'TTMLoss', 'WTTMLoss'
]
