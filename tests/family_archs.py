"""Small architectures of every family, for tests that run each shared behaviour over all families."""

#: registry name -> an ``arch`` small enough for fast CPU tests (every stage and kind of block present)
SMALL_ARCH = {
    # a block pair (SDA, then LDA) in the stages whose maps exceed the group size at test sizes
    'CrossFormer': dict(embed_dims=32, depths=(2, 2, 1, 1), num_heads=(1, 2, 4, 8)),
    'Conv2Former': dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), kernel_size=5),
    # xxs's kinds of block (one local branch + global heads; with and without downsampling) at a fifth
    # of its blocks and widths
    'CloFormer': dict(embed_dims=(16, 32, 48, 64), depths=(1, 2, 1, 1), num_heads=(2, 2, 3, 4),
                      group_splits=((1, 1), (1, 1), (2, 1), (1, 3))),
    'Conformer': dict(patch_size=16, channel_ratio=1, base_channels=16, embed_dims=32, num_heads=2, depth=6),
    'CvT': dict(embed_dims=(16, 32, 48), depths=(1, 2, 2), num_heads=(1, 2, 3)),
}
