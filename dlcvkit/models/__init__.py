"""Models: timm backbones with local weight files, classification heads, FCN/DeepLab decoders, BYOL networks."""
