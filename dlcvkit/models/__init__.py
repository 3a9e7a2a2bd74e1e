"""Models: timm backbones with local weight files (and the backbone files of other runs), classification heads,
FCN/DeepLab decoders, BYOL networks, Segment Anything loading."""
