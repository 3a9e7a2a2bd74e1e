"""Models: timm backbones with local weight files (and the backbone files of other runs), classification heads,
FCN/DeepLab decoders and smp's UNet, DeepLabV3+ and FPN, BYOL networks, Segment Anything loading."""
