"""Base utilities every part may use; they import nothing else from vgg_jax.

- `files`: atomic writes (a reader never sees half a file, a kill never leaves one).
- `images`: decoding to RGB uint8, the torchvision and Keras resize rules, crops and pixel conventions
  (NumPy).
- `xla_flags`: the XLA:CPU convolution flags that `apply()` adds before a backend starts (the commands
  call it).
"""
