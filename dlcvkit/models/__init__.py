"""Models: timm backbones with local weight files (and the backbone files of other runs), classification heads,
FCN/DeepLab decoders, Segment Anything loading. The self-supervised methods' heads live in their method's module
(dlcvkit.tasks.byol, ...)."""
