"""Importing this registers every dataset that comes with multitx (data=NAME)."""

import multitx.data.captions.datasets  # noqa: F401 - shapes, coco, flickr
import multitx.data.images.datasets  # noqa: F401 - cifar10, fashion_mnist, imagefolder
import multitx.data.text.corpus  # noqa: F401 - pysource, shakespeare, textfile
import multitx.data.text.nanogpt  # noqa: F401 - bin (nanoGPT's train.bin, val.bin)
