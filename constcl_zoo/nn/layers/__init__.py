"""Building blocks shared by the networks: TF-'same' convolution/pooling and ROIAlign."""

from .roi_align import roi_align, roi_align_mean
from .tf_same import Conv3dSame, MaxPool3dSame, same_padding

__all__ = ["Conv3dSame", "MaxPool3dSame", "roi_align", "roi_align_mean", "same_padding"]
