"""Small architectures of every family, for tests that run each shared behaviour over all families."""

#: registry name -> an ``arch`` small enough for fast CPU tests (every stage present)
SMALL_ARCH = {
    'CrossFormer': dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
    'Conv2Former': dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), kernel_size=5),
    'CloFormer': 'xxs',
    'Conformer': dict(patch_size=16, channel_ratio=1, base_channels=16, embed_dims=32, num_heads=2, depth=6),
    'CvT': dict(embed_dims=(16, 32, 48), depths=(1, 2, 2), num_heads=(1, 2, 3)),
}
